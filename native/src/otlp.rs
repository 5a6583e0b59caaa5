//! The native `otlp_proto` decoder: the twin of `collector.codec.otlp.OtlpDecoder.decode_proto`.
//!
//! It reads the protobuf wire format itself, by the rules of upb (the parser behind the Python
//! path), because the two must refuse exactly the same records: a tag is at most 5 bytes and
//! 32 bits, a length at most 5 bytes, a varint at most 10; field 0, wire types 6 and 7, an
//! unmatched end-group are corrupt; submessages and groups nest at most 100 deep; a proto3
//! `string` must be UTF-8; a field with an unexpected wire type is an unknown field; the last
//! of a repeated singular field wins; a map entry holding an unknown field is dropped.  The lean
//! schema is `collector.codec.proto`'s: which fields are read, and which are kept as bytes.
//!
//! What is rare or has its semantics elsewhere stays in Python, through the callables given to
//! the constructor: the resource (once per distinct `Resource` bytes), an attribute's `AnyValue`
//! (once per distinct bytes), a span status (once per distinct bytes), the sampling probability,
//! a span's exceptions (only a span with events, or an error), and the wording of a rejection.

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};
use rustc_hash::{FxHashMap, FxHashSet};

const MAX_DEPTH: u32 = 100; // upb's default recursion limit: submessages and groups
const CACHE_LIMIT: usize = 100_000; // entries per cache before it is cleared

/// Why a record is not valid protobuf, and where (a byte offset in the record).
struct Corrupt {
    at: usize,
    what: String,
}

enum Fail {
    Corrupt(Corrupt),
    Py(PyErr),
}

impl From<PyErr> for Fail {
    fn from(e: PyErr) -> Self {
        Fail::Py(e)
    }
}

impl From<std::convert::Infallible> for Fail {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

type R<T> = Result<T, Fail>;

fn corrupt<T>(at: usize, what: impl Into<String>) -> R<T> {
    Err(Fail::Corrupt(Corrupt {
        at,
        what: what.into(),
    }))
}

/// A reader over `buf[pos..end]`; offsets are the record's.
#[derive(Clone, Copy)]
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Wire<'a> {
    fn done(&self) -> bool {
        self.pos >= self.end
    }

    #[inline]
    fn varint_of(&mut self, max_bytes: usize, what: &str) -> R<u64> {
        if self.pos < self.end && self.buf[self.pos] < 0x80 {
            self.pos += 1;
            return Ok(self.buf[self.pos - 1] as u64); // the common case: one byte
        }
        self.varint_slow(max_bytes, what)
    }

    #[cold]
    fn varint_slow(&mut self, max_bytes: usize, what: &str) -> R<u64> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..max_bytes {
            if self.pos >= self.end {
                return corrupt(start, format!("{what} runs past the end of its message"));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            if i < 10 {
                v |= ((b & 0x7f) as u64).wrapping_shl(7 * i as u32);
            }
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        corrupt(start, format!("{what} is longer than {max_bytes} bytes"))
    }

    fn varint(&mut self) -> R<u64> {
        self.varint_of(10, "a varint")
    }

    fn tag(&mut self) -> R<(u32, u8)> {
        let at = self.pos;
        let (field, wt) = self.any_tag()?;
        if field == 0 {
            return corrupt(at, "a field number is 0");
        }
        Ok((field, wt))
    }

    /// A tag, field number 0 included: upb refuses it in a message, not inside an unknown group.
    fn any_tag(&mut self) -> R<(u32, u8)> {
        let at = self.pos;
        let v = self.varint_of(5, "a field tag")?;
        if v > u32::MAX as u64 {
            return corrupt(at, "a field tag is over 32 bits");
        }
        let (field, wt) = ((v >> 3) as u32, (v & 7) as u8);
        if wt == 6 || wt == 7 {
            return corrupt(
                at,
                format!("field {field} has wire type {wt}, which does not exist"),
            );
        }
        Ok((field, wt))
    }

    fn bytes(&mut self) -> R<&'a [u8]> {
        let at = self.pos;
        let n = self.varint_of(5, "a length")? as usize;
        if n > self.end - self.pos {
            return corrupt(
                at,
                format!("a length of {n} bytes runs past the end of its message"),
            );
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The reader of a length-delimited field's contents, `s` (a slice of `self.buf`).
    fn sub(&self, s: &[u8]) -> Wire<'a> {
        let pos = s.as_ptr() as usize - self.buf.as_ptr() as usize;
        Wire {
            buf: self.buf,
            pos,
            end: pos + s.len(),
        }
    }

    fn fixed(&mut self, n: usize) -> R<u64> {
        if self.end - self.pos < n {
            return corrupt(
                self.pos,
                format!(
                    "a {}-bit fixed field runs past the end of its message",
                    8 * n
                ),
            );
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(u64::from_le_bytes(b))
    }

    /// Skips an unknown field (a group: to its end tag, nesting one deeper).
    fn skip(&mut self, field: u32, wt: u8, depth: u32) -> R<()> {
        match wt {
            0 => {
                self.varint()?;
            }
            1 => {
                self.fixed(8)?;
            }
            2 => {
                self.bytes()?;
            }
            5 => {
                self.fixed(4)?;
            }
            3 => {
                let at = self.pos;
                if depth + 1 > MAX_DEPTH {
                    return corrupt(
                        at,
                        format!("groups and messages nest deeper than {MAX_DEPTH} levels"),
                    );
                }
                loop {
                    if self.done() {
                        return corrupt(at, format!("group {field} has no end"));
                    }
                    let (f, w) = self.any_tag()?;
                    if w == 4 {
                        if f == field {
                            return Ok(());
                        }
                        return corrupt(
                            self.pos,
                            format!("group {field} is ended by the end tag of group {f}"),
                        );
                    }
                    self.skip(f, w, depth + 1)?;
                }
            }
            _ => {
                return corrupt(
                    self.pos,
                    format!("an end-group tag (field {field}) outside its group"),
                );
            }
        }
        Ok(())
    }

    /// A proto3 `string`: its bytes, refused unless UTF-8.
    fn string(&mut self, what: &str) -> R<&'a [u8]> {
        let at = self.pos;
        let s = self.bytes()?;
        if std::str::from_utf8(s).is_err() {
            return corrupt(at, format!("{what} is not valid UTF-8"));
        }
        Ok(s)
    }

    /// A `map<string, bytes>` entry (depth: the entry's): `None` when upb drops it (it holds
    /// an unknown field).  `key` checks that the key is UTF-8 (and may know it already).
    fn entry(
        &mut self,
        depth: u32,
        key_ok: &mut impl FnMut(&[u8]) -> bool,
    ) -> R<Option<(&'a [u8], &'a [u8])>> {
        let (mut key, mut value): (&[u8], &[u8]) = (b"", b"");
        let mut unknown = false;
        while !self.done() {
            let at = self.pos;
            match self.tag()? {
                (1, 2) => {
                    key = self.bytes()?;
                    if !key_ok(key) {
                        return corrupt(at, "an attribute key is not valid UTF-8");
                    }
                }
                (2, 2) => value = self.bytes()?,
                (f, w) => {
                    self.skip(f, w, depth)?;
                    unknown = true;
                }
            }
        }
        Ok(if unknown { None } else { Some((key, value)) })
    }
}

/// Whether `k` is UTF-8, remembering the keys that are (a span's attribute keys repeat).
fn known_utf8(valid: &mut FxHashSet<Vec<u8>>, k: &[u8]) -> bool {
    if valid.contains(k) {
        return true;
    }
    if std::str::from_utf8(k).is_err() {
        return false;
    }
    if valid.len() >= CACHE_LIMIT {
        valid.clear();
    }
    valid.insert(k.to_vec());
    true
}

/// Nests one level deeper, or refuses past upb's limit.
fn deeper(at: usize, depth: u32) -> R<u32> {
    if depth + 1 > MAX_DEPTH {
        return corrupt(
            at,
            format!("groups and messages nest deeper than {MAX_DEPTH} levels"),
        );
    }
    Ok(depth + 1)
}

/// One span's fields as read (byte slices of the record).
struct RawSpan<'a> {
    bytes: &'a [u8],
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a [u8],
    parent: &'a [u8],
    name: &'a [u8],
    kind: u64,
    start: u64,
    end: u64,
    status: &'a [u8],
    last_event: &'a [u8],
}

/// The decoder: its projection, the callables into Python, and its caches (bounded).
#[pyclass(module = "prodloop_native")]
pub struct ProtoDecoder {
    wanted: FxHashMap<Vec<u8>, usize>,
    wanted_keys: Vec<Py<PyString>>,
    rate_slot: Option<usize>,
    span_type: Py<PyType>,
    no_exceptions: PyObject,
    empty: PyObject,
    one: PyObject,
    status_error: i64,
    resource_of: PyObject,
    value_of: PyObject,
    status_of: PyObject,
    tracestate_probability: PyObject,
    rate_probability: PyObject,
    exceptions_of: PyObject,
    corrupt_error: PyObject,
    resources: FxHashMap<Vec<u8>, PyObject>,
    values: FxHashMap<Vec<u8>, PyObject>,
    names: FxHashMap<Vec<u8>, PyObject>,
    statuses: FxHashMap<Vec<u8>, i64>,
    probabilities: FxHashMap<Vec<u8>, PyObject>,
    valid_keys: FxHashSet<Vec<u8>>,
}

/// What one `decode` call builds.
struct Out<'py, 'a> {
    py: Python<'py>,
    data: &'a [u8],
    lo: i128,
    hi: i128,
    location: &'a Bound<'py, PyAny>,
    spans: Bound<'py, PyList>,
    rejected: Bound<'py, PyList>,
    events_checked: bool,
    found: Vec<Option<&'a [u8]>>,
    // the last span's trace id: a trace's spans mostly come in runs, and share one bytes object
    last_trace: Option<(&'a [u8], Bound<'py, PyAny>)>,
}

fn cached<'py>(
    py: Python<'py>,
    cache: &mut FxHashMap<Vec<u8>, PyObject>,
    key: &[u8],
    make: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(v) = cache.get(key) {
        return Ok(v.bind(py).clone());
    }
    let v = make()?;
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key.to_vec(), v.clone().unbind());
    Ok(v)
}

impl ProtoDecoder {
    fn traces(&mut self, out: &mut Out<'_, '_>) -> R<()> {
        let mut w = Wire {
            buf: out.data,
            pos: 0,
            end: out.data.len(),
        };
        let mut ri = 0usize;
        while !w.done() {
            let at = w.pos;
            match w.tag()? {
                (1, 2) => {
                    let s = w.bytes()?;
                    self.resource_spans(out, w.sub(s), deeper(at, 0)?, ri)?;
                    ri += 1;
                }
                (f, t) => w.skip(f, t, 0)?,
            }
        }
        Ok(())
    }

    fn resource_spans<'a>(
        &mut self,
        out: &mut Out<'_, 'a>,
        mut w: Wire<'a>,
        depth: u32,
        ri: usize,
    ) -> R<()> {
        let mut resource: &[u8] = b"";
        let mut scopes: Vec<(usize, &'a [u8])> = Vec::new();
        while !w.done() {
            let at = w.pos;
            match w.tag()? {
                (1, 2) => resource = w.bytes()?,
                (2, 2) => scopes.push((at, w.bytes()?)),
                (f, t) => w.skip(f, t, depth)?,
            }
        }
        let py = out.py;
        let res = cached(py, &mut self.resources, resource, || {
            self.resource_of
                .bind(py)
                .call1((PyBytes::new(py, resource), ri, out.location))
        })?;
        for (si, (at, s)) in scopes.into_iter().enumerate() {
            let mut sw = w.sub(s);
            let d = deeper(at, depth)?;
            let mut pi = 0usize;
            while !sw.done() {
                let at = sw.pos;
                match sw.tag()? {
                    (2, 2) => {
                        let b = sw.bytes()?;
                        self.span(out, sw.sub(b), deeper(at, d)?, &res, (ri, si, pi))?;
                        pi += 1;
                    }
                    (f, t) => sw.skip(f, t, d)?,
                }
            }
        }
        Ok(())
    }

    fn span<'a>(
        &mut self,
        out: &mut Out<'_, 'a>,
        mut w: Wire<'a>,
        depth: u32,
        resource: &Bound<'_, PyAny>,
        path: (usize, usize, usize),
    ) -> R<()> {
        let py = out.py;
        let mut sp = RawSpan {
            bytes: &w.buf[w.pos..w.end],
            trace_id: b"",
            span_id: b"",
            trace_state: b"",
            parent: b"",
            name: b"",
            kind: 0,
            start: 0,
            end: 0,
            status: b"",
            last_event: b"",
        };
        let mut name: Option<Bound<'_, PyAny>> = None;
        out.found.clear();
        out.found.resize(self.wanted_keys.len(), None);
        while !w.done() {
            let at = w.pos;
            match w.tag()? {
                (1, 2) => sp.trace_id = w.bytes()?,
                (2, 2) => sp.span_id = w.bytes()?,
                (3, 2) => sp.trace_state = w.string("a span's trace_state")?,
                (4, 2) => sp.parent = w.bytes()?,
                (5, 2) => {
                    // a cached name is known UTF-8; the lookup is kept for building the span
                    sp.name = w.bytes()?;
                    name = self.names.get(sp.name).map(|n| n.bind(py).clone());
                    if name.is_none() && std::str::from_utf8(sp.name).is_err() {
                        return corrupt(at, "a span's name is not valid UTF-8");
                    }
                }
                (6, 0) => sp.kind = w.varint()?,
                (7, 1) => sp.start = w.fixed(8)?,
                (8, 1) => sp.end = w.fixed(8)?,
                (9, 2) => {
                    let b = w.bytes()?;
                    let mut ew = w.sub(b);
                    let (wanted, keys) = (&self.wanted, &mut self.valid_keys);
                    let mut key_ok = |k: &[u8]| wanted.contains_key(k) || known_utf8(keys, k);
                    if let Some((key, value)) = ew.entry(deeper(at, depth)?, &mut key_ok)?
                        && let Some(&slot) = self.wanted.get(key)
                    {
                        out.found[slot] = Some(value);
                    }
                }
                (11, 2) => sp.last_event = w.bytes()?,
                (15, 2) => sp.status = w.bytes()?,
                (f, t) => w.skip(f, t, depth)?,
            }
        }
        // the projected attributes, in the projection's order, each decoded once per distinct bytes
        let attrs = PyDict::new(py);
        let mut rate: Option<Bound<'_, PyAny>> = None;
        for slot in 0..out.found.len() {
            let Some(raw) = out.found[slot] else { continue };
            let value_of = &self.value_of;
            let val = cached(py, &mut self.values, raw, || {
                value_of
                    .bind(py)
                    .call1((PyBytes::new(py, raw), out.location))
            })?;
            if !val.is_none() {
                attrs.set_item(self.wanted_keys[slot].bind(py), &val)?;
                if self.rate_slot == Some(slot) {
                    rate = Some(val);
                }
            }
        }
        let (start, end) = (sp.start as i128, sp.end as i128);
        if sp.trace_id.len() != 16
            || sp.span_id.len() != 8
            || end < start
            || start < out.lo
            || end > out.hi
            || (!sp.parent.is_empty() && sp.parent.len() != 8)
            || sp.trace_id.iter().all(|&b| b == 0)
            || sp.span_id.iter().all(|&b| b == 0)
        {
            let r = PyTuple::new(
                py,
                [
                    path.0.into_pyobject(py)?.into_any(),
                    path.1.into_pyobject(py)?.into_any(),
                    path.2.into_pyobject(py)?.into_any(),
                    PyBytes::new(py, sp.trace_id).into_any(),
                    PyBytes::new(py, sp.span_id).into_any(),
                    PyBytes::new(py, sp.parent).into_any(),
                    sp.start.into_pyobject(py)?.into_any(),
                    sp.end.into_pyobject(py)?.into_any(),
                ],
            )?;
            out.rejected.append(r)?;
            return Ok(());
        }
        let p = if let Some(v) = rate {
            self.rate_probability.bind(py).call1((v,))?
        } else if !sp.trace_state.is_empty() {
            let f = &self.tracestate_probability;
            let ts = sp.trace_state;
            cached(py, &mut self.probabilities, ts, || {
                // validated as UTF-8 when read
                f.bind(py).call1((PyString::new(
                    py,
                    std::str::from_utf8(ts).unwrap_or_default(),
                ),))
            })?
        } else {
            self.one.bind(py).clone()
        };
        let mut status_code = 0i64;
        if !sp.status.is_empty() {
            status_code = match self.statuses.get(sp.status) {
                Some(&c) => c,
                None => {
                    let c: i64 = self
                        .status_of
                        .bind(py)
                        .call1((PyBytes::new(py, sp.status), out.location))?
                        .extract()?;
                    if self.statuses.len() >= CACHE_LIMIT {
                        self.statuses.clear();
                    }
                    self.statuses.insert(sp.status.to_vec(), c);
                    c
                }
            };
        }
        let has_events = !sp.last_event.is_empty();
        if has_events && !out.events_checked {
            // the Python path parses every span's events once a span has some: so does this
            events_view(out.data)?;
            out.events_checked = true;
        }
        let exceptions = if has_events || status_code == self.status_error {
            self.exceptions_of.bind(py).call1((
                PyBytes::new(py, sp.bytes),
                has_events,
                out.location,
            ))?
        } else {
            self.no_exceptions.bind(py).clone()
        };
        let name = match name {
            Some(n) => n,
            None => cached(py, &mut self.names, sp.name, || {
                Ok(PyString::new(py, std::str::from_utf8(sp.name).unwrap_or_default()).into_any())
            })?,
        };
        let parent = if sp.parent.is_empty() {
            self.empty.bind(py).clone()
        } else {
            PyBytes::new(py, sp.parent).into_any()
        };
        let trace_id = match &out.last_trace {
            Some((raw, obj)) if *raw == sp.trace_id => obj.clone(),
            _ => {
                let obj = PyBytes::new(py, sp.trace_id).into_any();
                out.last_trace = Some((sp.trace_id, obj.clone()));
                obj
            }
        };
        let items = [
            resource.clone(),
            trace_id,
            PyBytes::new(py, sp.span_id).into_any(),
            name,
            sp.start.into_pyobject(py)?.into_any(),
            sp.end.into_pyobject(py)?.into_any(),
            status_code.into_pyobject(py)?.into_any(),
            attrs.into_any(),
            (sp.kind as i32).into_pyobject(py)?.into_any(), // int32: the low 32 bits, as upb
            parent,
            p,
            exceptions,
        ];
        out.spans
            .append(new_tuple(py, self.span_type.bind(py), items)?)?;
        Ok(())
    }
}

/// An instance of the tuple subclass `tp` (`attribution.model.Span`, a NamedTuple) holding `items`.
fn new_tuple<'py, const N: usize>(
    py: Python<'py>,
    tp: &Bound<'py, PyType>,
    items: [Bound<'py, PyAny>; N],
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `tp` is a tuple subclass (checked in `new`); its tp_alloc gives a tuple of N empty
    // slots with one reference, which PyTuple_SetItem fills (stealing each item's reference).
    unsafe {
        let t = tp.as_type_ptr();
        let alloc: ffi::allocfunc = std::mem::transmute(ffi::PyType_GetSlot(t, ffi::Py_tp_alloc));
        let obj = Bound::from_owned_ptr_or_err(py, alloc(t, N as ffi::Py_ssize_t))?;
        for (i, item) in items.into_iter().enumerate() {
            if ffi::PyTuple_SetItem(obj.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr()) != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(obj)
    }
}

/// The events-only view of a record (`LeanTraceEvents`): what parsing it checks that the main
/// pass does not (each event's name, and its attributes as map entries).
fn events_view(data: &[u8]) -> R<()> {
    fn each<'a>(
        mut w: Wire<'a>,
        depth: u32,
        field: u32,
        mut f: impl FnMut(Wire<'a>, u32) -> R<()>,
    ) -> R<()> {
        while !w.done() {
            let at = w.pos;
            match w.tag()? {
                (n, 2) if n == field => {
                    let b = w.bytes()?;
                    f(w.sub(b), deeper(at, depth)?)?;
                }
                (n, t) => w.skip(n, t, depth)?,
            }
        }
        Ok(())
    }
    let top = Wire {
        buf: data,
        pos: 0,
        end: data.len(),
    };
    each(top, 0, 1, |rs, d| {
        each(rs, d, 2, |ss, d| {
            each(ss, d, 2, |span, d| {
                each(span, d, 11, |mut ev, d| {
                    while !ev.done() {
                        let at = ev.pos;
                        match ev.tag()? {
                            (2, 2) => {
                                ev.string("an event's name")?;
                            }
                            (3, 2) => {
                                let b = ev.bytes()?;
                                let mut key_ok = |k: &[u8]| std::str::from_utf8(k).is_ok();
                                ev.sub(b).entry(deeper(at, d)?, &mut key_ok)?;
                            }
                            (f, t) => ev.skip(f, t, d)?,
                        }
                    }
                    Ok(())
                })
            })
        })
    })
}

#[pymethods]
impl ProtoDecoder {
    /// The exception a Rust panic becomes (a BaseException): the caller turns it into a
    /// refused record, so that a decoder bug never ends the process.
    #[classattr]
    fn panic(py: Python<'_>) -> Py<PyType> {
        py.get_type::<pyo3::panic::PanicException>().unbind()
    }

    /// ``wanted``: the projected span attributes, in the order the Python path inserts them;
    /// the callables are the Python path's own (see `collector.codec.otlp`).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (wanted, sample_rate_attribute, span_type, no_exceptions, status_error, *, resource_of, value_of, status_of, tracestate_probability, rate_probability, exceptions_of, corrupt_error))]
    fn new(
        py: Python<'_>,
        wanted: Vec<Bound<'_, PyString>>,
        sample_rate_attribute: &str,
        span_type: Bound<'_, PyType>,
        no_exceptions: PyObject,
        status_error: i64,
        resource_of: PyObject,
        value_of: PyObject,
        status_of: PyObject,
        tracestate_probability: PyObject,
        rate_probability: PyObject,
        exceptions_of: PyObject,
        corrupt_error: PyObject,
    ) -> PyResult<Self> {
        if !span_type.is_subclass_of::<PyTuple>()? {
            return Err(PyValueError::new_err("span_type must be a tuple subclass"));
        }
        let mut index = FxHashMap::default();
        let mut rate_slot = None;
        for (i, k) in wanted.iter().enumerate() {
            let key = k.to_str()?;
            if key == sample_rate_attribute {
                rate_slot = Some(i);
            }
            index.insert(key.as_bytes().to_vec(), i);
        }
        Ok(ProtoDecoder {
            wanted: index,
            wanted_keys: wanted.into_iter().map(Bound::unbind).collect(),
            rate_slot,
            span_type: span_type.unbind(),
            no_exceptions,
            empty: PyBytes::new(py, b"").into_any().unbind(),
            one: 1.0f64.into_pyobject(py)?.into_any().unbind(),
            status_error,
            resource_of,
            value_of,
            status_of,
            tracestate_probability,
            rate_probability,
            exceptions_of,
            corrupt_error,
            resources: FxHashMap::default(),
            values: FxHashMap::default(),
            names: FxHashMap::default(),
            statuses: FxHashMap::default(),
            probabilities: FxHashMap::default(),
            valid_keys: FxHashSet::default(),
        })
    }

    /// ``(spans, rejected)``: the `Span` tuples, and per rejected span ``(ri, si, pi, trace_id,
    /// span_id, parent_span_id, start, end)``; ``lo``/``hi``: the time window
    /// (`TimeBounds.window`).  A record that is not valid protobuf raises what
    /// ``corrupt_error(message, location, size)`` returns.
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        lo: i64,
        hi: i64,
        location: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let mut out = Out {
            py,
            data,
            lo: lo as i128,
            hi: hi as i128,
            location,
            spans: PyList::empty(py),
            rejected: PyList::empty(py),
            events_checked: false,
            last_trace: None,
            found: Vec::with_capacity(self.wanted_keys.len()),
        };
        match self.traces(&mut out) {
            Ok(()) => Ok((out.spans, out.rejected)),
            Err(Fail::Py(e)) => Err(e),
            Err(Fail::Corrupt(c)) => {
                let msg = format!("{} (at byte {})", c.what, c.at);
                let err = self
                    .corrupt_error
                    .bind(py)
                    .call1((msg, location, data.len()))?;
                Err(PyErr::from_value(err))
            }
        }
    }
}
