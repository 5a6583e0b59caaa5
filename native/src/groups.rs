//! The group lookup: the twin of the loop of `attribution.attribute.Attributor.group_ids`.
//!
//! The caches stay the attributor's own Python dicts (per resource: code location -> location
//! slot, (location, commit slot) -> group id, the deploy interval, the locations seen), reached
//! through `state(resource)`; a miss calls the attributor back (`locate`, `resolve_dep`,
//! `new_gid`), which stays the only implementation of CODEOWNERS, module rules and the deploy
//! lookup.  What runs here is the per-span part: the key, the lookups, the interval test.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyTuple};

/// A Python int as an i128 (the deploy interval's ends reach 2^63), through i64 when it fits.
fn wide(v: &Bound<'_, PyAny>) -> PyResult<i128> {
    match v.extract::<i64>() {
        Ok(x) => Ok(x as i128),
        Err(_) => v.extract::<i128>(),
    }
}

/// `[lo, hi, commit slot]` (or None: the empty interval), as the attributor keeps it.
fn interval(dep: &Bound<'_, PyAny>) -> PyResult<(i128, i128, i64)> {
    if dep.is_none() {
        return Ok((0, -1, 0));
    }
    Ok((
        wide(&dep.get_item(0)?)?,
        wide(&dep.get_item(1)?)?,
        dep.get_item(2)?.extract()?,
    ))
}

/// `mapping.get(key)` (a span's attributes: a dict, or the empty default mapping).
fn get<'py>(
    mapping: &Bound<'py, PyAny>,
    key: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(d) = mapping.downcast::<PyDict>() {
        return d.get_item(key);
    }
    let v = mapping.call_method1("get", (key,))?;
    Ok(if v.is_none() { None } else { Some(v) })
}

/// Python's `a or b` over two lookups (a missing key is None).
fn either<'py>(
    a: Option<Bound<'py, PyAny>>,
    b: Option<Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Some(x) = &a
        && x.is_truthy()?
    {
        return Ok(a);
    }
    Ok(b)
}

/// ``(group ids, latest span start or None)`` of ``spans``.  ``keys``: the attribute names
/// (code.file.path, code.filepath, code.namespace, code.function.name, code.function,
/// http.route, rpc.service, rpc.method); ``simple``: the location is the file alone;
/// ``needs_name``: the location includes the span name.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (spans, state, locate, resolve_dep, new_gid, keys, simple, needs_name))]
pub fn group_ids<'py>(
    py: Python<'py>,
    spans: &Bound<'py, PyAny>,
    state: &Bound<'py, PyAny>,
    locate: &Bound<'py, PyAny>,
    resolve_dep: &Bound<'py, PyAny>,
    new_gid: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyTuple>,
    simple: bool,
    needs_name: bool,
) -> PyResult<(Bound<'py, PyList>, Option<i64>)> {
    let k: Vec<Bound<'py, PyAny>> = keys.iter().collect();
    if k.len() != 8 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "group_ids: 8 attribute keys expected",
        ));
    }
    let out = PyList::empty(py);
    let mut latest: Option<i64> = None;
    let mut last_res: Option<Bound<'py, PyAny>> = None;
    let none = py.None().into_bound(py);
    let (mut paths, mut gids) = (PyDict::new(py), PyDict::new(py));
    let mut seen = PySet::empty(py)?;
    let (mut lo, mut hi, mut slot) = (0i128, -1i128, 0i64);
    for span in spans.try_iter()? {
        let span = span?;
        let t = span.downcast::<PyTuple>()?;
        let res = t.get_item(0)?;
        if !last_res.as_ref().is_some_and(|r| r.is(&res)) {
            let st = state.call1((&res,))?;
            let st = st.downcast::<PyTuple>()?;
            paths = st.get_item(0)?.downcast_into::<PyDict>()?;
            (lo, hi, slot) = interval(&st.get_item(1)?)?;
            gids = st.get_item(2)?.downcast_into::<PyDict>()?;
            seen = st.get_item(3)?.downcast_into::<PySet>()?;
            last_res = Some(res.clone());
        }
        let a = t.get_item(7)?;
        let f = either(get(&a, &k[0])?, get(&a, &k[1])?)?.unwrap_or_else(|| none.clone());
        let key = if simple {
            f.clone()
        } else {
            PyTuple::new(
                py,
                [
                    f.clone(),
                    get(&a, &k[2])?.unwrap_or_else(|| none.clone()),
                    either(get(&a, &k[3])?, get(&a, &k[4])?)?.unwrap_or_else(|| none.clone()),
                    get(&a, &k[5])?.unwrap_or_else(|| none.clone()),
                    get(&a, &k[6])?.unwrap_or_else(|| none.clone()),
                    get(&a, &k[7])?.unwrap_or_else(|| none.clone()),
                    if needs_name {
                        t.get_item(3)?
                    } else {
                        none.clone()
                    },
                ],
            )?
            .into_any()
        };
        let loc: i64 = match paths.get_item(&key)? {
            Some(v) => v.extract()?,
            None => -1,
        };
        let loc = if loc < 0 {
            locate.call1((&span, &paths, &f, simple))?.extract()?
        } else {
            loc
        };
        seen.add(loc)?;
        let start: i64 = t.get_item(4)?.extract()?;
        if latest.is_none_or(|l| start > l) {
            latest = Some(start);
        }
        let s = start as i128;
        if !(lo <= s && s < hi) {
            (lo, hi, slot) = interval(&resolve_dep.call1((&res, start))?)?;
        }
        let gk = (loc << 24) | slot;
        let gid = match gids.get_item(gk)? {
            Some(g) => g,
            None => {
                let g = new_gid.call1((loc, slot, &res))?;
                gids.set_item(gk, &g)?;
                g
            }
        };
        out.append(gid)?;
    }
    Ok((out, latest))
}
