//! The trace buffer's core: the twin of `attribution.tracebuffer.TraceCore` (its rules are in
//! that module's docstring).  It holds the spans of incomplete traces as packed structs, keyed
//! by their 16-byte trace ids, and feeds each completed trace to its own `SelfAcc`; the group
//! indices, the rows and the rebuild state's types stay with `attribution.tracebuffer.TraceBuffer`.
//!
//! Where Python's dict keeps insertion order (``complete_all``), this keeps each entry's
//! sequence number, which grows with insertion: the same order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{Packed, SelfAcc, weight_milli};

type Tid = [u8; 16];

/// Completed trace ids remembered to tell late spans from orphans (a metric only), as
/// `attribution.tracebuffer._RECENT_KEPT`.
const RECENT_KEPT: usize = 100_000;

struct Entry {
    spans: Vec<Packed>,
    first: i64,           // offset of its first record
    deadline: i64,        // ms
    crec: i64,            // spans added before its first record
    wbefore: Option<i64>, // the watermark before its first record
    last: i64,            // offset of its last record
    seq: u64,             // grows with insertion
    ghost: i64,           // >= 0: a ghost of a rebuild, counting its spans; -1: not one
    late: bool,           // its trace had completed before
}

#[derive(Default, Clone, Copy)]
struct Counts {
    traces: i64,
    spans: i64,
    orphans: i64,
    late: i64,
    early: i64,
    idle: i64,
    peak: i64,
}

fn tid_of(b: &Bound<'_, PyAny>) -> PyResult<Tid> {
    let bytes = b.downcast::<PyBytes>()?.as_bytes();
    bytes
        .try_into()
        .map_err(|_| PyValueError::new_err(format!("a trace id of {} bytes, not 16", bytes.len())))
}

fn id64(b: &[u8]) -> PyResult<u64> {
    match b.len() {
        0 => Ok(0), // no parent: the root's, as the Python packing stores it
        8 => Ok(u64::from_ne_bytes(b.try_into().expect("8 bytes"))),
        n => Err(PyValueError::new_err(format!(
            "a span id of {n} bytes, not 8"
        ))),
    }
}

/// ``TraceCore(window_ns, wait_ms, max_spans, exact, *, inv_log_gamma, status_error,
/// max_weight_milli)``: see `attribution.tracebuffer.TraceCore` for each method.
#[pyclass(module = "prodloop_native")]
pub struct TraceCore {
    exact: bool,
    wait_ms: i64,
    max_spans: i64,
    status_error: i64,
    max_weight_milli: i64,
    watermark: Option<i64>,
    buffered: i64,
    count: i64,
    seq: u64,
    entries: FxHashMap<Tid, Entry>,
    deadlines: BinaryHeap<Reverse<(i64, u64, Tid)>>,
    order: VecDeque<(i64, u64, Tid)>,
    completed: Vec<(Tid, i64, i64, i64, i64)>, // trace id, first, last, deadline, crec
    recent: FxHashSet<Tid>,
    recent_order: VecDeque<Tid>,
    counts: Counts,
    selfs: SelfAcc,
    run: Vec<Packed>,
}

impl TraceCore {
    fn complete_deadlines(&mut self, emit: bool) {
        let Some(wm) = self.watermark else { return };
        while let Some(Reverse((dl, seq, tid))) = self.deadlines.peek().copied() {
            if dl > wm {
                break;
            }
            self.deadlines.pop();
            if self.entries.get(&tid).is_some_and(|e| e.seq == seq) {
                self.finish(tid, emit);
            }
        }
    }

    fn complete_capped(&mut self, emit: bool) {
        let limit = self.count - self.max_spans;
        while let Some(&(c, seq, tid)) = self.order.front() {
            if c >= limit {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&tid).is_some_and(|e| e.seq == seq) {
                if emit {
                    self.counts.early += 1;
                }
                self.finish(tid, emit);
            }
        }
    }

    fn finish(&mut self, tid: Tid, emit: bool) {
        let Some(mut e) = self.entries.remove(&tid) else {
            return;
        };
        if self.exact {
            self.completed
                .push((tid, e.first, e.last, e.deadline, e.crec));
        }
        if self.recent.insert(tid) {
            self.recent_order.push_back(tid);
            if self.recent_order.len() > RECENT_KEPT
                && let Some(old) = self.recent_order.pop_front()
            {
                self.recent.remove(&old);
            }
        }
        if e.ghost >= 0 {
            self.buffered -= e.ghost;
            return;
        }
        let n = e.spans.len() as i64;
        self.buffered -= n;
        if !emit {
            return;
        }
        self.counts.traces += 1;
        self.counts.spans += n;
        let orphans = self.selfs.add(&mut e.spans) as i64;
        if orphans > 0 {
            if e.late {
                self.counts.late += orphans;
            } else {
                self.counts.orphans += orphans;
            }
        }
    }

    /// A new entry (``ghost``: -1, or 0 for a ghost of a rebuild), with its deadline and its
    /// place in the order of the span cap.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        tid: Tid,
        first: i64,
        deadline: i64,
        crec: i64,
        wbefore: Option<i64>,
        ghost: i64,
        late: bool,
    ) {
        self.seq += 1;
        let seq = self.seq;
        let e = Entry {
            spans: Vec::new(),
            first,
            deadline,
            crec,
            wbefore,
            last: first,
            seq,
            ghost,
            late,
        };
        self.entries.insert(tid, e);
        self.deadlines.push(Reverse((deadline, seq, tid)));
        self.order.push_back((crec, seq, tid));
    }

    /// The run of one trace's spans in ``self.run``, into its entry (a new one when none).
    fn flush_run(
        &mut self,
        tid: Tid,
        offset: i64,
        deadline: i64,
        c_rec: i64,
        w_before: Option<i64>,
    ) {
        if !self.entries.contains_key(&tid) {
            let late = self.recent.contains(&tid);
            self.open(tid, offset, deadline, c_rec, w_before, -1, late);
        }
        let e = self.entries.get_mut(&tid).expect("inserted above");
        e.last = offset;
        if e.ghost >= 0 {
            e.ghost += self.run.len() as i64;
        } else {
            e.spans.reserve_exact(self.run.len()); // a trace comes in a few runs: no doubling slack
            e.spans.extend_from_slice(&self.run);
        }
        self.run.clear();
    }
}

#[pymethods]
impl TraceCore {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (window_ns, wait_ms, max_spans, exact, *, inv_log_gamma, status_error, max_weight_milli))]
    fn new(
        window_ns: i64,
        wait_ms: i64,
        max_spans: i64,
        exact: bool,
        inv_log_gamma: f64,
        status_error: i64,
        max_weight_milli: i64,
    ) -> PyResult<Self> {
        if wait_ms < 0 || max_spans < 1 {
            return Err(PyValueError::new_err(
                "trace_wait must be >= 0 and max_buffered_spans >= 1",
            ));
        }
        Ok(TraceCore {
            exact,
            wait_ms,
            max_spans,
            status_error,
            max_weight_milli,
            watermark: None,
            buffered: 0,
            count: 0,
            seq: 0,
            entries: FxHashMap::default(),
            deadlines: BinaryHeap::new(),
            order: VecDeque::new(),
            completed: Vec::new(),
            recent: FxHashSet::default(),
            recent_order: VecDeque::new(),
            counts: Counts::default(),
            selfs: SelfAcc::new(window_ns, inv_log_gamma)?,
            run: Vec::new(),
        })
    }

    fn __len__(&self) -> usize {
        self.entries.len()
    }

    #[getter]
    fn buffered(&self) -> i64 {
        self.buffered
    }

    #[getter]
    fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    #[pyo3(signature = (offset, timestamp_ms, spans, gidx, emit = true))]
    fn add(
        &mut self,
        offset: i64,
        timestamp_ms: i64,
        spans: &Bound<'_, PyAny>,
        gidx: &Bound<'_, PyAny>,
        emit: bool,
    ) -> PyResult<()> {
        let n = spans.len()?;
        if gidx.len()? != n {
            return Err(PyValueError::new_err(format!(
                "{} spans but {} group indices",
                n,
                gidx.len()?
            )));
        }
        let w_before = self.watermark;
        if timestamp_ms >= 0 && w_before.is_none_or(|w| timestamp_ms > w) {
            self.watermark = Some(timestamp_ms);
            self.complete_deadlines(emit); // before this record's spans: they arrive after that
        }
        let c_rec = self.count;
        let base = if timestamp_ms >= 0 {
            timestamp_ms
        } else {
            w_before.unwrap_or(0)
        };
        let deadline = base.saturating_add(self.wait_ms);
        let mut last: Option<Tid> = None;
        self.run.clear();
        for (span, g) in spans.try_iter()?.zip(gidx.try_iter()?) {
            let span = span?;
            let g: i64 = g?.extract()?;
            let t = span.downcast::<PyTuple>()?;
            let tid = tid_of(&t.get_item(1)?)?;
            if last != Some(tid) {
                if let Some(l) = last {
                    self.flush_run(l, offset, deadline, c_rec, w_before);
                }
                last = Some(tid);
            }
            let sid = id64(t.get_borrowed_item(2)?.downcast::<PyBytes>()?.as_bytes())?;
            let pid = id64(t.get_borrowed_item(9)?.downcast::<PyBytes>()?.as_bytes())?;
            let status: i64 = t.get_borrowed_item(6)?.extract()?;
            let p: f64 = t.get_borrowed_item(10)?.extract()?;
            self.run.push(Packed {
                sid,
                pid,
                start: t.get_borrowed_item(4)?.extract()?,
                end: t.get_borrowed_item(5)?.extract()?,
                flags: g * 2 + (status == self.status_error) as i64,
                weight: if p == 1.0 {
                    1000
                } else {
                    weight_milli(p, self.max_weight_milli)
                },
            });
        }
        if let Some(l) = last {
            self.flush_run(l, offset, deadline, c_rec, w_before);
        }
        self.count += n as i64;
        self.buffered += n as i64;
        self.counts.peak = self.counts.peak.max(self.buffered);
        self.complete_capped(emit);
        Ok(())
    }

    fn advance(&mut self, watermark_ms: i64) {
        if self.watermark.is_none_or(|w| watermark_ms > w) {
            self.watermark = Some(watermark_ms);
        }
        self.complete_deadlines(true);
    }

    #[pyo3(signature = (emit = true))]
    fn complete_all(&mut self, emit: bool) -> usize {
        let n = self.entries.len();
        let mut due: Vec<(u64, Tid)> = self.entries.iter().map(|(t, e)| (e.seq, *t)).collect();
        due.sort_unstable(); // insertion order, as Python's dict
        for (_, tid) in due {
            self.finish(tid, emit);
        }
        if emit {
            self.counts.idle += n as i64;
        }
        self.deadlines.clear();
        self.order.clear();
        n
    }

    fn rebuild_state<'py>(
        &mut self,
        py: Python<'py>,
        end_offset: i64,
    ) -> PyResult<(i64, Option<i64>, Bound<'py, PyList>)> {
        let (mut low, mut wm, mut counted) = (end_offset, self.watermark, self.count);
        for e in self.entries.values() {
            // entries of one first record share their watermark and count: any order gives the same
            if e.ghost < 0 && e.first < low {
                (low, wm, counted) = (e.first, e.wbefore, e.crec);
            }
        }
        self.completed.retain(|c| c.2 >= low);
        let ghosts = PyList::empty(py);
        for &(tid, first, _, dl, c) in &self.completed {
            if first < low {
                ghosts.append((PyBytes::new(py, &tid), dl, c - counted))?;
            }
        }
        Ok((low, wm, ghosts))
    }

    #[pyo3(signature = (watermark_ms, ghosts))]
    fn restore(&mut self, watermark_ms: Option<i64>, ghosts: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.entries.is_empty() {
            return Err(PyValueError::new_err("restore needs an empty buffer"));
        }
        self.watermark = watermark_ms;
        self.count = 0;
        self.completed.clear();
        for g in ghosts.try_iter()? {
            let (tid, deadline, counted_from): (Bound<'_, PyAny>, i64, i64) = g?.extract()?;
            self.open(tid_of(&tid)?, -1, deadline, counted_from, None, 0, false);
        }
        Ok(())
    }

    fn take_counts(&mut self) -> (i64, i64, i64, i64, i64, i64, i64, i64) {
        let c = self.counts;
        self.counts = Counts {
            peak: self.buffered,
            ..Counts::default()
        };
        (
            c.traces,
            c.spans,
            c.orphans,
            c.late,
            c.early,
            c.idle,
            c.peak,
            self.buffered,
        )
    }

    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.selfs.drain(py)
    }

    fn nbytes(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.ghost < 0)
            .map(|e| e.spans.len() * 48)
            .sum()
    }
}
