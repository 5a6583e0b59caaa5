//! The Aggregator's hot loop: the twin of the per-span work of
//! `attribution.aggregate.Aggregator.add` and of its `fold`, over `attribution.model.Span`
//! tuples and their group ids.
//!
//! Per (window, group) it accumulates what `fold` computes in bulk from the pending durations
//! and the rarer "extra" accounting (errors, sampling weights, CPU time, exception events), so
//! the drained totals are identical.  The cardinality cap, the CPU-time value and the thrown
//! exceptions call back into Python: the overflow group, `cpu_time_ns` and the stack-trace
//! attribution have their semantics there.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::{Bins, int, weight_milli};

#[derive(Default)]
struct Acc {
    n: i64,
    adj: i128, // sum of weights in thousandths
    errors: i64,
    err_adj: i128, // sum of the errors' weights
    dsum: i128,
    dsum_adj: i128, // sum of d * weight // 1000
    min: i64,
    max: i64,
    bins: Bins,
    cpu: i128,
    exceptions: i64,
}

#[derive(Default)]
struct Window {
    index: FxHashMap<i64, usize>, // group id -> its place in `accs`
    accs: Vec<(i64, Acc)>,        // in the order first seen, as the Python fold inserts them
}

/// The windows of one Aggregator: (window start, group id) -> accumulated values.
#[pyclass(module = "prodloop_native")]
pub struct Windows {
    window_ns: i64,
    cap: usize,
    status_error: i64,
    max_weight_milli: i64,
    inv_log_gamma: f64,
    cpu_attribute: Option<Py<PyString>>,
    windows: FxHashMap<i64, Window>,
}

#[pymethods]
impl Windows {
    #[new]
    #[pyo3(signature = (window_ns, max_groups_per_window, *, status_error, max_weight_milli, inv_log_gamma, cpu_time_attribute))]
    fn new(
        window_ns: i64,
        max_groups_per_window: usize,
        status_error: i64,
        max_weight_milli: i64,
        inv_log_gamma: f64,
        cpu_time_attribute: Option<Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        if window_ns <= 0 {
            return Err(PyValueError::new_err("window_ns must be positive"));
        }
        Ok(Windows {
            window_ns,
            cap: max_groups_per_window,
            status_error,
            max_weight_milli,
            inv_log_gamma,
            cpu_attribute: cpu_time_attribute
                .filter(|s| s.len().unwrap_or(0) > 0)
                .map(Bound::unbind),
            windows: FxHashMap::default(),
        })
    }

    /// Accumulates ``spans`` (``gids``: their group ids, a list: a span past the cap gets its
    /// ``overflow(gid)`` group there).  ``cpu_ns(value)``: a CPU-time attribute's nanoseconds;
    /// ``thrown(window, gid, span)``: a span with exceptions.  Returns the spans past the cap.
    fn add(
        &mut self,
        spans: &Bound<'_, PyAny>,
        gids: &Bound<'_, PyList>,
        overflow: &Bound<'_, PyAny>,
        cpu_ns: &Bound<'_, PyAny>,
        thrown: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let n = spans.len()?;
        if gids.len() != n {
            return Err(PyValueError::new_err(format!(
                "{} spans but {} group ids",
                n,
                gids.len()
            )));
        }
        let py = spans.py();
        let mut overflowed = 0usize;
        let mut last_w = i64::MIN;
        let mut win: Option<&mut Window> = None;
        let cpu_key = self.cpu_attribute.as_ref().map(|k| k.bind(py));
        for (i, span) in spans.try_iter()?.enumerate() {
            let span = span?;
            let t = span.downcast::<PyTuple>()?;
            let start: i64 = t.get_borrowed_item(4)?.extract()?;
            let end: i64 = t.get_borrowed_item(5)?.extract()?;
            let mut gid: i64 = gids.get_item(i)?.extract()?;
            let w = start - start.rem_euclid(self.window_ns); // Python's start - start % window_ns
            if w != last_w || win.is_none() {
                win = Some(self.windows.entry(w).or_default());
                last_w = w;
            }
            let window = win.as_mut().expect("set above");
            let slot = match window.index.get(&gid) {
                Some(&s) => s,
                None => {
                    if window.index.len() >= self.cap {
                        gid = overflow.call1((gid,))?.extract()?;
                        gids.set_item(i, gid)?;
                        overflowed += 1;
                    }
                    match window.index.get(&gid) {
                        Some(&s) => s,
                        None => {
                            window.accs.push((
                                gid,
                                Acc {
                                    min: i64::MAX,
                                    max: i64::MIN,
                                    ..Acc::default()
                                },
                            ));
                            window.index.insert(gid, window.accs.len() - 1);
                            window.accs.len() - 1
                        }
                    }
                }
            };
            let a = &mut window.accs[slot].1;
            let d = end - start;
            a.n += 1;
            a.adj += 1000;
            a.dsum += d as i128;
            a.dsum_adj += d as i128;
            a.min = a.min.min(d);
            a.max = a.max.max(d);
            a.bins.add(d, self.inv_log_gamma);
            let status: i64 = t.get_borrowed_item(6)?.extract()?;
            let p: f64 = t.get_borrowed_item(10)?.extract()?;
            let exc = t.get_borrowed_item(11)?;
            let n_exc = exc.len()?;
            let mut cpu_value: Option<Bound<'_, PyAny>> = None;
            if let Some(key) = &cpu_key {
                let attrs = t.get_borrowed_item(7)?;
                if let Ok(d) = attrs.downcast::<PyDict>() {
                    cpu_value = d.get_item(key)?;
                } else if attrs.contains(key)? {
                    cpu_value = Some(attrs.get_item(key)?);
                }
            }
            let error = status == self.status_error;
            if !(error || p != 1.0 || n_exc > 0 || cpu_value.is_some()) {
                continue;
            }
            let wt = weight_milli(p, self.max_weight_milli) as i128;
            if error {
                a.errors += 1;
                a.err_adj += wt;
            }
            a.adj += wt - 1000;
            a.dsum_adj += (d as i128 * wt).div_euclid(1000) - d as i128;
            if let Some(v) = cpu_value {
                a.cpu += cpu_ns.call1((v,))?.extract::<i128>()?;
            }
            if n_exc > 0 {
                a.exceptions += n_exc as i64;
                thrown.call1((w, gid, &span))?;
            }
        }
        Ok(overflowed)
    }

    fn __len__(&self) -> usize {
        self.windows.values().map(|w| w.accs.len()).sum()
    }

    /// The windows held, unordered.
    fn windows(&self) -> Vec<i64> {
        self.windows.keys().copied().collect()
    }

    /// Drains window ``w``: per group, in the order first seen, ``(gid, spans, adjusted spans,
    /// errors, adjusted errors, duration sum, adjusted sum, min, max, bins, cpu ns, exception
    /// events)``; empty when the window holds nothing.
    fn take<'py>(&mut self, py: Python<'py>, w: i64) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let Some(window) = self.windows.remove(&w) else {
            return Ok(out);
        };
        for (gid, a) in window.accs {
            let row = PyTuple::new(
                py,
                [
                    int(py, gid as i128)?,
                    int(py, a.n as i128)?,
                    int(py, a.adj)?,
                    int(py, a.errors as i128)?,
                    int(py, a.err_adj)?,
                    int(py, a.dsum)?,
                    int(py, a.dsum_adj)?,
                    int(py, a.min as i128)?,
                    int(py, a.max as i128)?,
                    a.bins.into_dict(py)?.into_any(),
                    int(py, a.cpu)?,
                    int(py, a.exceptions as i128)?,
                ],
            )?;
            out.append(row)?;
        }
        Ok(out)
    }
}
