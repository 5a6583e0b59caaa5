//! The dedup window: the twin of `collector.processing.dedup.DedupWindow`, over fixed-size keys.
//!
//! A key is a span's trace id and span id, 24 bytes, compared exactly, held inline: no Python
//! bytes object per span, and a few dozen bytes per key where the Python window holds two
//! objects and a dict entry.

use std::collections::VecDeque;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use rustc_hash::FxHashMap;

type Key = [u8; 24];

#[pyclass(module = "prodloop_native")]
pub struct DedupWindow {
    #[pyo3(get)]
    horizon: i64,
    seen: FxHashMap<Key, i64>,
    order: VecDeque<(i64, Vec<Key>)>,
}

/// A span's key: its trace id (16 bytes) and span id (8).
fn key_of(span: &Bound<'_, PyAny>) -> PyResult<Key> {
    let t = span.downcast::<PyTuple>()?;
    let tid = t.get_borrowed_item(1)?;
    let sid = t.get_borrowed_item(2)?;
    let (tid, sid) = (
        tid.downcast::<PyBytes>()?.as_bytes(),
        sid.downcast::<PyBytes>()?.as_bytes(),
    );
    if tid.len() != 16 || sid.len() != 8 {
        return Err(PyValueError::new_err(format!(
            "a span's ids are {} and {} bytes, not 16 and 8",
            tid.len(),
            sid.len()
        )));
    }
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(tid);
    k[16..].copy_from_slice(sid);
    Ok(k)
}

#[pymethods]
impl DedupWindow {
    #[new]
    fn new(horizon: i64) -> Self {
        DedupWindow {
            horizon,
            seen: FxHashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Marks ``spans`` (`attribution.model.Span` tuples) seen at ``offset``: True where a span
    /// was seen within the horizon before this record.
    fn observe_spans<'py>(
        &mut self,
        py: Python<'py>,
        offset: i64,
        spans: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let floor = offset - self.horizon;
        while self.order.front().is_some_and(|(off, _)| *off < floor) {
            let (off, keys) = self.order.pop_front().expect("checked");
            for k in keys {
                if self.seen.get(&k) == Some(&off) {
                    self.seen.remove(&k);
                }
            }
        }
        let keys: Vec<Key> = spans
            .try_iter()?
            .map(|s| key_of(&s?))
            .collect::<PyResult<_>>()?;
        let out = PyList::new(py, keys.iter().map(|k| self.seen.contains_key(k)))?;
        for k in &keys {
            self.seen.insert(*k, offset);
        }
        self.order.push_back((offset, keys));
        Ok(out)
    }

    fn __len__(&self) -> usize {
        self.seen.len()
    }
}
