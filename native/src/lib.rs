//! prodloop's native hot path.  The pure-Python code in `attribution/` is the reference: every
//! function here has a Python twin, and `tests/unit/test_native.py` proves both give identical
//! results.
//!
//! Today:
//! - the `otlp_proto` decoder (`otlp::ProtoDecoder`, the twin of
//!   `collector.codec.otlp.OtlpDecoder.decode_proto`);
//! - the dedup window (`dedup::DedupWindow`, the twin of
//!   `collector.processing.dedup.DedupWindow`);
//! - the group lookup (`groups::group_ids`, the twin of the loop of
//!   `attribution.attribute.Attributor.group_ids`);
//! - the aggregation loop and fold (`aggregate::Windows`, the twin of
//!   `attribution.aggregate.Aggregator`'s);
//! - the trace buffer's core (`tracebuffer::TraceCore`, the twin of
//!   `attribution.tracebuffer.TraceCore`), with its completion math (`SelfAcc`, the twin of
//!   `attribution.selftime.trace_self_times` and `attribution.aggregate.SelfTimes`).

mod aggregate;
mod dedup;
mod groups;
mod otlp;
mod tracebuffer;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use rustc_hash::FxHashMap;

/// One buffered span, as the trace buffer packs it.
#[derive(Clone, Copy)]
pub(crate) struct Packed {
    pub(crate) sid: u64,
    pub(crate) pid: u64,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) flags: i64, // group index * 2 + error
    pub(crate) weight: i64,
}

/// What one trace's math needs, kept between traces so that a trace allocates nothing.
#[derive(Default)]
struct Scratch {
    spans: Vec<Packed>,
    index: FxHashMap<u64, usize>,
    parents: Vec<Option<usize>>,
    kids: Vec<(usize, i64, i64)>,
    selfs: Vec<i64>,
    failed_under: Vec<bool>,
    own: Vec<bool>,
}

impl Scratch {
    /// Self time of each span of ``self.spans``, own errors (``self.own``, filled only when a
    /// span is an error: the return's bool) and the orphan count: a port of
    /// `attribution.selftime.trace_self_times` (ids as int64s, the root's parent id 0).
    fn trace_self_times(&mut self) -> (usize, bool) {
        let spans = &self.spans;
        let n = spans.len();
        self.index.clear();
        for (i, sp) in spans.iter().enumerate() {
            self.index.insert(sp.sid, i); // a duplicate id: its last copy is the parent
        }
        self.parents.clear();
        let mut loops = 0;
        for (i, sp) in spans.iter().enumerate() {
            let mut p = self.index.get(&sp.pid).copied();
            if p == Some(i) {
                p = None; // a span naming itself as its parent has none
                loops += 1;
            }
            self.parents.push(p);
        }
        self.selfs.clear();
        self.selfs.extend(spans.iter().map(|sp| sp.end - sp.start));
        self.kids.clear();
        for (sp, p) in spans.iter().zip(&self.parents) {
            if let Some(p) = *p {
                self.kids.push((p, sp.start, sp.end));
            }
        }
        self.kids.sort_unstable();
        let roots = spans.iter().filter(|sp| sp.pid == 0).count();
        let orphans = n - self.kids.len() - roots - loops;
        // children in (parent, start) order: one sweep merges each parent's intervals
        let selfs = &mut self.selfs;
        let mut cur: Option<usize> = None;
        let (mut lo, mut hi, mut cs, mut ce, mut total) = (0i64, 0i64, 0i64, 0i64, 0i64);
        for &(p, a0, b0) in &self.kids {
            if cur != Some(p) {
                if let Some(c) = cur {
                    selfs[c] -= total + ce - cs;
                }
                cur = Some(p);
                lo = spans[p].start;
                cs = lo;
                ce = lo;
                hi = spans[p].end;
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
        if !spans.iter().any(|sp| sp.flags & 1 == 1) {
            return (orphans, false);
        }
        self.failed_under.clear();
        self.failed_under.resize(n, false);
        for (sp, p) in spans.iter().zip(&self.parents) {
            if let (1, Some(p)) = (sp.flags & 1, *p) {
                self.failed_under[p] = true;
            }
        }
        self.own.clear();
        self.own.extend(
            spans
                .iter()
                .zip(&self.failed_under)
                .map(|(sp, &f)| sp.flags & 1 == 1 && !f),
        );
        (orphans, true)
    }
}

#[derive(Default)]
struct Acc {
    n: i64,
    total: i128,
    adj: i128,     // sum of (weight - 1000)
    sum_adj: i128, // sum of (v * weight // 1000 - v)
    min: i64,
    max: i64,
    bins: Bins,
    own: i64,
    own_adj: i128,
}

/// The sketch bins of some values (`attribution.aggregate.bins_of`, `attribution.sketch`):
/// bucket -> count, in the order first seen, as Python's Counter.
#[derive(Default)]
pub(crate) struct Bins {
    counts: Vec<(i64, i64)>,
    index: FxHashMap<i64, usize>, // bucket -> its place in `counts`
}

impl Bins {
    /// Counts `v` (ns) in its bucket: `ceil(log(v) * inv_log_gamma) + 1`, 0 for `v <= 0`.
    pub(crate) fn add(&mut self, v: i64, inv_log_gamma: f64) {
        let bin = if v > 0 {
            ((v as f64).ln() * inv_log_gamma).ceil() as i64 + 1
        } else {
            0
        };
        match self.index.get(&bin) {
            Some(&k) => self.counts[k].1 += 1,
            None => {
                self.index.insert(bin, self.counts.len());
                self.counts.push((bin, 1));
            }
        }
    }

    pub(crate) fn into_dict(self, py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let d = PyDict::new(py);
        for (b, c) in self.counts {
            d.set_item(b, c)?;
        }
        Ok(d)
    }
}

/// The twin of `attribution.aggregate.SelfTimes`: completed traces' self times and own errors,
/// accumulated per (window, group index) in the order first seen.
pub(crate) struct SelfAcc {
    window_ns: i64,
    inv_log_gamma: f64,
    keys: FxHashMap<(i64, i64), usize>,
    accs: Vec<((i64, i64), Acc)>,
    scratch: Scratch,
}

/// A Python int of ``v``: through an int64 when it fits (the abi3 i128 conversion is slow).
pub(crate) fn int(py: Python<'_>, v: i128) -> PyResult<Bound<'_, PyAny>> {
    Ok(match i64::try_from(v) {
        Ok(small) => small.into_pyobject(py)?.into_any(),
        Err(_) => v.into_pyobject(py)?.into_any(),
    })
}

fn floor_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b) // b > 0: Python's //
}

impl SelfAcc {
    pub(crate) fn new(window_ns: i64, inv_log_gamma: f64) -> PyResult<Self> {
        if window_ns <= 0 {
            return Err(PyValueError::new_err("window_ns must be positive"));
        }
        Ok(SelfAcc {
            window_ns,
            inv_log_gamma,
            keys: FxHashMap::default(),
            accs: Vec::new(),
            scratch: Scratch::default(),
        })
    }

    /// One completed trace's spans (taken: ``spans`` is left empty); returns the number of
    /// orphans.
    pub(crate) fn add(&mut self, spans: &mut Vec<Packed>) -> usize {
        let scratch = &mut self.scratch;
        std::mem::swap(&mut scratch.spans, spans);
        spans.clear();
        let (orphans, any_error) = scratch.trace_self_times();
        let window = self.window_ns as i128;
        for (i, sp) in scratch.spans.iter().enumerate() {
            let key = (floor_div(sp.start as i128, window) as i64, sp.flags >> 1);
            let slot = match self.keys.get(&key) {
                Some(&s) => s,
                None => {
                    self.accs.push((
                        key,
                        Acc {
                            min: i64::MAX,
                            max: i64::MIN,
                            ..Acc::default()
                        },
                    ));
                    self.keys.insert(key, self.accs.len() - 1);
                    self.accs.len() - 1
                }
            };
            let a = &mut self.accs[slot].1;
            let v = scratch.selfs[i];
            let w = sp.weight;
            a.n += 1;
            a.total += v as i128;
            a.min = a.min.min(v);
            a.max = a.max.max(v);
            a.bins.add(v, self.inv_log_gamma);
            if w != 1000 {
                a.adj += (w - 1000) as i128;
                a.sum_adj += floor_div(v as i128 * w as i128, 1000) - v as i128;
            }
            if any_error && scratch.own[i] {
                a.own += 1;
                a.own_adj += w as i128;
            }
        }
        orphans
    }

    /// Drain: per (window, group index), in the order first seen, ``(window start, group index,
    /// spans, adjusted spans in thousandths, self time sum, adjusted sum, min, max, bins, own
    /// errors, adjusted own errors in thousandths)``: `SelfTimes.drain`'s tuples.
    pub(crate) fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for ((w, g), a) in self.accs.drain(..) {
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
                    a.bins.into_dict(py)?.into_any(),
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
pub(crate) fn weight_milli(p: f64, max_weight_milli: i64) -> i64 {
    if p >= 1.0 || p <= 0.0 || p.is_nan() {
        return 1000;
    }
    let w = (1000.0 / p).round_ties_even();
    if w >= max_weight_milli as f64 {
        max_weight_milli
    } else {
        w as i64
    }
}

/// The decoder, the dedup window, the group lookup, the aggregation windows, the trace buffer.
#[pymodule]
fn prodloop_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<otlp::ProtoDecoder>()?;
    m.add_class::<aggregate::Windows>()?;
    m.add_class::<dedup::DedupWindow>()?;
    m.add_function(wrap_pyfunction!(groups::group_ids, m)?)?;
    m.add_class::<tracebuffer::TraceCore>()?;
    Ok(())
}
