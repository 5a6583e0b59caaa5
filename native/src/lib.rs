//! prodloop's native hot path.  The pure-Python code in `attribution/` is the reference: every
//! function here has a Python twin, and `tests/unit/test_native.py` proves both give identical
//! results.
//!
//! Today: the trace buffer's packing of a record's spans (`attribution.tracebuffer.pack_runs`)
//! and its completion math (`attribution.selftime.trace_self_times` and
//! `attribution.aggregate.SelfTimes`), over that packed span data.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use rustc_hash::FxHashMap;

/// Self time of each span of one trace, own errors and the orphan count: a port of
/// `attribution.selftime.trace_self_times` (ids as int64s, the root's parent id 0).
fn trace_self_times(
    sids: &[u64],
    pids: &[u64],
    starts: &[i64],
    ends: &[i64],
    errors: Option<&[bool]>,
) -> (Vec<i64>, Option<Vec<bool>>, usize) {
    let n = sids.len();
    let mut index: FxHashMap<u64, usize> = FxHashMap::default();
    index.reserve(n);
    for (i, &s) in sids.iter().enumerate() {
        index.insert(s, i); // a duplicate id: its last copy is the parent
    }
    let mut parents: Vec<Option<usize>> = pids.iter().map(|p| index.get(p).copied()).collect();
    let mut loops = 0;
    for (i, p) in parents.iter_mut().enumerate() {
        if *p == Some(i) {
            *p = None; // a span naming itself as its parent has none
            loops += 1;
        }
    }
    let mut selfs: Vec<i64> = ends.iter().zip(starts).map(|(e, s)| e - s).collect();
    let mut kids: Vec<(usize, i64, i64)> = parents
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|p| (p, starts[i], ends[i])))
        .collect();
    kids.sort_unstable();
    let roots = pids.iter().filter(|&&p| p == 0).count();
    let orphans = n - kids.len() - roots - loops;
    // children in (parent, start) order: one sweep merges each parent's intervals
    let mut cur: Option<usize> = None;
    let (mut lo, mut hi, mut cs, mut ce, mut total) = (0i64, 0i64, 0i64, 0i64, 0i64);
    for &(p, a0, b0) in &kids {
        if cur != Some(p) {
            if let Some(c) = cur {
                selfs[c] -= total + ce - cs;
            }
            cur = Some(p);
            lo = starts[p];
            cs = lo;
            ce = lo;
            hi = ends[p];
            total = 0;
        }
        let a = a0.max(lo);
        let b = b0.min(hi);
        if a > ce {
            if b > a {
                // an empty (clipped away) child covers nothing
                total += ce - cs;
                cs = a;
                ce = b;
            }
        } else if b > ce {
            ce = b;
        }
    }
    if let Some(c) = cur {
        selfs[c] -= total + ce - cs;
    }
    let own = errors.map(|errs| {
        let mut failed_under = vec![false; n];
        for (i, &e) in errs.iter().enumerate() {
            if let (true, Some(p)) = (e, parents[i]) {
                failed_under[p] = true;
            }
        }
        errs.iter().enumerate().map(|(i, &e)| e && !failed_under[i]).collect()
    });
    (selfs, own, orphans)
}

#[derive(Default)]
struct Acc {
    n: i64,
    total: i128,
    adj: i128,     // sum of (weight - 1000)
    sum_adj: i128, // sum of (v * weight // 1000 - v)
    min: i64,
    max: i64,
    bins: Vec<(i64, i64)>, // (bin, count) in the order first seen, as Python's Counter
    own: i64,
    own_adj: i128,
}

/// `attribution.aggregate.SelfTimes`, fed with a completed trace's packed data as the trace
/// buffer holds it (:meth:`add_packed`); :meth:`drain` gives the accumulated values.
#[pyclass(module = "prodloop_native")]
struct SelfTimes {
    window_ns: i64,
    inv_log_gamma: f64,
    keys: FxHashMap<(i64, i64), usize>,
    accs: Vec<((i64, i64), Acc)>,
}

/// A Python int of ``v``: through an int64 when it fits (the abi3 i128 conversion is slow).
fn int(py: Python<'_>, v: i128) -> PyResult<Bound<'_, PyAny>> {
    Ok(match i64::try_from(v) {
        Ok(small) => small.into_pyobject(py)?.into_any(),
        Err(_) => v.into_pyobject(py)?.into_any(),
    })
}

fn floor_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b) // b > 0: Python's //
}

#[pymethods]
impl SelfTimes {
    #[new]
    fn new(window_ns: i64, inv_log_gamma: f64) -> PyResult<Self> {
        if window_ns <= 0 {
            return Err(PyValueError::new_err("window_ns must be positive"));
        }
        Ok(SelfTimes { window_ns, inv_log_gamma, keys: FxHashMap::default(), accs: Vec::new() })
    }

    fn __len__(&self) -> usize {
        self.accs.len()
    }

    /// One completed trace: ``ids`` (bytes: per span its 8-byte id and parent id, zeroes for
    /// none) and ``nums`` (int64s: per span start, end, group index * 2 + error, weight in
    /// thousandths).  Returns the number of orphans.
    fn add_packed(&mut self, py: Python<'_>, ids: PyBuffer<u8>, nums: PyBuffer<i64>) -> PyResult<usize> {
        let raw_ids = ids.to_vec(py)?;
        let raw = nums.to_vec(py)?;
        let n = raw.len() / 4;
        if raw.len() != 4 * n || raw_ids.len() != 16 * n {
            return Err(PyValueError::new_err(format!(
                "packed trace: {} id bytes and {} numbers do not describe whole spans",
                raw_ids.len(),
                raw.len()
            )));
        }
        let word = |k: usize| u64::from_ne_bytes(raw_ids[8 * k..8 * k + 8].try_into().unwrap());
        let sids: Vec<u64> = (0..n).map(|i| word(2 * i)).collect();
        let pids: Vec<u64> = (0..n).map(|i| word(2 * i + 1)).collect();
        let starts: Vec<i64> = (0..n).map(|i| raw[4 * i]).collect();
        let ends: Vec<i64> = (0..n).map(|i| raw[4 * i + 1]).collect();
        let errs: Vec<bool> = (0..n).map(|i| raw[4 * i + 2] & 1 == 1).collect();
        let any_error = errs.iter().any(|&e| e);
        let (selfs, own, orphans) =
            trace_self_times(&sids, &pids, &starts, &ends, if any_error { Some(&errs) } else { None });
        for i in 0..n {
            let key = (floor_div(starts[i] as i128, self.window_ns as i128) as i64, raw[4 * i + 2] >> 1);
            let slot = match self.keys.get(&key) {
                Some(&s) => s,
                None => {
                    self.accs.push((key, Acc { min: i64::MAX, max: i64::MIN, ..Acc::default() }));
                    self.keys.insert(key, self.accs.len() - 1);
                    self.accs.len() - 1
                }
            };
            let a = &mut self.accs[slot].1;
            let v = selfs[i];
            let w = raw[4 * i + 3];
            a.n += 1;
            a.total += v as i128;
            a.min = a.min.min(v);
            a.max = a.max.max(v);
            let bin = if v > 0 { ((v as f64).ln() * self.inv_log_gamma).ceil() as i64 + 1 } else { 0 };
            match a.bins.iter_mut().find(|(b, _)| *b == bin) {
                Some((_, c)) => *c += 1,
                None => a.bins.push((bin, 1)),
            }
            if w != 1000 {
                a.adj += (w - 1000) as i128;
                a.sum_adj += floor_div(v as i128 * w as i128, 1000) - v as i128;
            }
            if let Some(own) = &own {
                if own[i] {
                    a.own += 1;
                    a.own_adj += w as i128;
                }
            }
        }
        Ok(orphans)
    }

    /// Drain: per (window, group index), in the order first seen, ``(window start, group index,
    /// spans, adjusted spans in thousandths, self time sum, adjusted sum, min, max, bins, own
    /// errors, adjusted own errors in thousandths)``.
    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for ((w, g), a) in self.accs.drain(..) {
            let bins = PyDict::new(py);
            for (b, c) in a.bins {
                bins.set_item(b, c)?;
            }
            let row = PyTuple::new(
                py,
                [
                    int(py, w as i128 * self.window_ns as i128)?,
                    int(py, g as i128)?,
                    int(py, a.n as i128)?,
                    int(py, 1000 * a.n as i128 + a.adj)?,
                    int(py, a.total)?,
                    int(py, a.total + a.sum_adj)?,
                    int(py, a.min as i128)?,
                    int(py, a.max as i128)?,
                    bins.into_any(),
                    int(py, a.own as i128)?,
                    int(py, a.own_adj)?,
                ],
            )?;
            out.append(row)?;
        }
        self.keys.clear();
        Ok(out)
    }
}

/// A span's weight in thousandths: `attribution.aggregate.weight_milli` (Python's `round` is
/// half to even).
fn weight_milli(p: f64, max_weight_milli: i64) -> i64 {
    if p >= 1.0 || !(p > 0.0) {
        return 1000;
    }
    let w = (1000.0 / p).round_ties_even();
    if w >= max_weight_milli as f64 { max_weight_milli } else { w as i64 }
}

/// One record's spans, packed per run of one trace: a port of `attribution.tracebuffer.pack_runs`
/// (``spans``: `attribution.model.Span` tuples; ``gidx``: each span's group index).
#[pyfunction]
fn pack_runs<'py>(
    py: Python<'py>,
    spans: &Bound<'py, PyAny>,
    gidx: &Bound<'py, PyAny>,
    status_error: i64,
    max_weight_milli: i64,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    let n = spans.len()?;
    if gidx.len()? != n {
        return Err(PyValueError::new_err(format!("{} spans but {} group indices", n, gidx.len()?)));
    }
    let mut last: Option<Bound<'py, PyBytes>> = None;
    let mut ids: Vec<u8> = Vec::new();
    let mut nums: Vec<u8> = Vec::new();
    let mut count: usize = 0;
    let flush = |tid: &Bound<'py, PyBytes>, ids: &mut Vec<u8>, nums: &mut Vec<u8>, count: usize| -> PyResult<()> {
        let run = PyTuple::new(
            py,
            [
                tid.clone().into_any(),
                PyBytes::new(py, ids).into_any(),
                PyBytes::new(py, nums).into_any(),
                count.into_pyobject(py)?.into_any(),
            ],
        )?;
        ids.clear();
        nums.clear();
        out.append(run)
    };
    for (span, g) in spans.try_iter()?.zip(gidx.try_iter()?) {
        let span = span?;
        let g: i64 = g?.extract()?;
        let t = span.downcast::<PyTuple>()?;
        let tid = t.get_item(1)?.downcast_into::<PyBytes>()?;
        let same = match &last {
            Some(l) => l.as_bytes() == tid.as_bytes(),
            None => false,
        };
        if !same {
            if let Some(l) = &last {
                flush(l, &mut ids, &mut nums, count)?;
            }
            last = Some(tid);
            count = 0;
        }
        let sid = t.get_item(2)?;
        ids.extend_from_slice(sid.downcast::<PyBytes>()?.as_bytes());
        let pid = t.get_item(9)?;
        let pid = pid.downcast::<PyBytes>()?.as_bytes();
        if pid.is_empty() {
            ids.extend_from_slice(&[0u8; 8]);
        } else {
            ids.extend_from_slice(pid);
        }
        let start: i64 = t.get_item(4)?.extract()?;
        let end: i64 = t.get_item(5)?.extract()?;
        let status: i64 = t.get_item(6)?.extract()?;
        let p: f64 = t.get_item(10)?.extract()?;
        let w = if p == 1.0 { 1000 } else { weight_milli(p, max_weight_milli) };
        for v in [start, end, g * 2 + (status == status_error) as i64, w] {
            nums.extend_from_slice(&v.to_ne_bytes());
        }
        count += 1;
    }
    if let Some(l) = &last {
        flush(l, &mut ids, &mut nums, count)?;
    }
    Ok(out)
}

/// The trace buffer's packing and self-time math, by the packed layout of `attribution.tracebuffer`.
#[pymodule]
fn prodloop_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SelfTimes>()?;
    m.add_function(wrap_pyfunction!(pack_runs, m)?)?;
    m.add("LAYOUT", "ids16-nums4")?;
    Ok(())
}
