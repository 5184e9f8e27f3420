//! The Python face of [`presence::Book`]: `geofences._kernel.PresenceBook`, one per
//! partition, driven by `decisions.core_states.CoreStates` and `Engine.decide`.

use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use std::collections::HashMap;
use std::sync::Arc;

use crate::presence::{Batch, Book, Catalog, Ping, Rules, GATES};
use crate::state::{names, State};

#[pyclass(module = "geofences._kernel", unsendable)]
pub struct PresenceBook {
    book: Book,
    /// Whether each device is inside some store, as Python last heard it from `visiting` or
    /// as its state was read (`load`): `visiting` reports only the devices where that changed.
    told: HashMap<String, bool>,
}

fn items<'py>(list: &Bound<'py, PyList>) -> PyResult<Vec<Bound<'py, PyString>>> {
    list.iter()
        .map(|i| i.downcast_into::<PyString>().map_err(PyErr::from))
        .collect()
}

fn strs<'a>(items: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    items.iter().map(|s| s.to_str()).collect()
}

/// `presence::Catalog` for Python: built once per engine, shared by its partitions' books.
#[pyclass(frozen, module = "geofences._kernel")]
pub struct PresenceCatalog {
    catalog: Arc<Catalog>,
}

#[pymethods]
impl PresenceCatalog {
    /// Each fence's store id, the stores with enter and with exit campaigns, the dwell
    /// campaigns [(store, campaign, dwell ms)] by priority, the rules (min_accuracy_m,
    /// exit_buffer_m, max_age_s, drive_by_mps, impossible_mps, min_speed_interval_s,
    /// presence_timeout_s), the state TTL and the longest cap window (ms).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fence_stores: Vec<String>,
        on_enter: Vec<String>,
        on_exit: Vec<String>,
        dwell: Vec<(String, String, f64)>,
        rules: (f64, f64, f64, f64, f64, f64, f64),
        ttl_ms: i64,
        keep_ms: i64,
    ) -> Self {
        let mut names = names();
        let fences = fence_stores.iter().map(|s| names.id(s)).collect();
        let enter: Vec<u32> = on_enter.iter().map(|s| names.id(s)).collect();
        let exit: Vec<u32> = on_exit.iter().map(|s| names.id(s)).collect();
        let due: Vec<(u32, u32, f64)> = dwell
            .iter()
            .map(|(s, c, ms)| (names.id(s), names.id(c), *ms))
            .collect();
        let cat = Catalog::build(
            rules_of(rules),
            ttl_ms,
            keep_ms,
            fences,
            &enter,
            &exit,
            &due,
        );
        PresenceCatalog {
            catalog: Arc::new(cat),
        }
    }
}

#[pymethods]
impl PresenceBook {
    #[new]
    fn new() -> Self {
        PresenceBook {
            book: Book::new(Arc::new(Catalog::default())),
            told: HashMap::new(),
        }
    }

    /// Decide with this catalog from now on (the states held stay: they name stores by id).
    fn configure(&mut self, catalog: &PresenceCatalog) {
        self.book.catalog = Arc::clone(&catalog.catalog);
    }

    /// The devices of `devices` (a list of str) whose state is not held here, once each.
    fn missing(&self, devices: &Bound<'_, PyList>) -> PyResult<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        let items = items(devices)?;
        Ok(strs(&items)?
            .into_iter()
            .filter(|d| !self.book.states.contains_key(*d) && seen.insert(*d))
            .map(str::to_owned)
            .collect())
    }

    /// Hold a device's state read from its bytes (`dirty`: and write it at the next take).
    #[pyo3(signature = (device, raw, dirty = false))]
    fn load(&mut self, device: &str, raw: &[u8], dirty: bool) -> PyResult<()> {
        let st = State::loads(raw, &mut names())
            .map_err(|e| PyValueError::new_err(format!("state of device {device:?}: {e}")))?;
        if dirty {
            self.book.dirty.insert(device.to_owned());
        } else {
            self.told.insert(device.to_owned(), !st.visits.is_empty());
        }
        self.book.states.insert(device.to_owned(), st);
        Ok(())
    }

    /// Gates and presence of one partition's batch; see `presence::Book::decide`.
    /// `distances(fences, lat, lng)` gives signed distances to fence boundaries.
    /// Returns (gate codes, [(ping, kind, store, campaign | None, visit_ms)], stream_ms).
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &mut self,
        py: Python<'py>,
        devices: &Bound<'py, PyList>,
        kind: PyReadonlyArray1<'py, u8>,
        ts: PyReadonlyArray1<'py, i64>,
        lat: PyReadonlyArray1<'py, f64>,
        lng: PyReadonlyArray1<'py, f64>,
        acc: PyReadonlyArray1<'py, f64>,
        speed: PyReadonlyArray1<'py, f64>,
        ptr: PyReadonlyArray1<'py, i64>,
        fence: PyReadonlyArray1<'py, i64>,
        certain: PyReadonlyArray1<'py, bool>,
        stream_ms: i64,
        distances: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray1<u8>>, Bound<'py, PyList>, i64)> {
        let items = items(devices)?;
        let devs = strs(&items)?;
        let (kind, ts, lat, lng) = (
            kind.as_slice()?,
            ts.as_slice()?,
            lat.as_slice()?,
            lng.as_slice()?,
        );
        let (acc, speed, ptr) = (acc.as_slice()?, speed.as_slice()?, ptr.as_slice()?);
        let (fence, certain) = (fence.as_slice()?, certain.as_slice()?);
        let n = devs.len();
        if [
            kind.len(),
            ts.len(),
            lat.len(),
            lng.len(),
            acc.len(),
            speed.len(),
        ] != [n; 6]
            || ptr.len() != n + 1
        {
            return Err(PyValueError::new_err(
                "devices, kind, ts, lat, lng, acc, speed and ptr differ in length",
            ));
        }
        if ptr.first() != Some(&0)
            || ptr.windows(2).any(|w| w[0] > w[1])
            || ptr[n] as usize != fence.len()
            || certain.len() != fence.len()
        {
            return Err(PyValueError::new_err(
                "ptr does not index fence and certain",
            ));
        }
        let fences = self.book.catalog.fence_store.len() as i64;
        if let Some(bad) = fence.iter().find(|&&f| f < 0 || f >= fences) {
            return Err(PyValueError::new_err(format!(
                "fence {bad} is not in the configured catalog"
            )));
        }
        let pings: Vec<Ping> = (0..n)
            .map(|k| Ping {
                ts: ts[k],
                lat: lat[k],
                lng: lng[k],
                acc: acc[k],
                speed: speed[k],
            })
            .collect();
        let batch = Batch {
            devices: &devs,
            kind,
            pings: &pings,
            ptr,
            fence,
            certain,
        };
        let (pk, pf) = self.book.away_pairs(&batch);
        let away: Vec<f64> = if pk.is_empty() {
            Vec::new()
        } else {
            let plat: Vec<f64> = pk.iter().map(|&k| lat[k]).collect();
            let plng: Vec<f64> = pk.iter().map(|&k| lng[k]).collect();
            let got = distances.call1((
                pf.into_pyarray(py),
                plat.into_pyarray(py),
                plng.into_pyarray(py),
            ))?;
            let got = got.downcast::<PyArray1<f64>>()?.readonly();
            let got = got.as_slice()?;
            if got.len() != pk.len() {
                return Err(PyValueError::new_err(
                    "distances returned the wrong number of values",
                ));
            }
            got.to_vec()
        };
        let (gates, events, stream) = self.book.decide(&batch, &away, stream_ms);
        let names = names();
        let out = PyList::empty(py);
        for e in events {
            let campaign = e.campaign.map(|c| names.name(c));
            out.append(PyTuple::new(
                py,
                [
                    e.ping.into_pyobject(py)?.into_any(),
                    e.kind.into_pyobject(py)?.into_any(),
                    names.name(e.store).into_pyobject(py)?.into_any(),
                    campaign.into_pyobject(py)?.into_any(),
                    e.visit_ms.into_pyobject(py)?.into_any(),
                ],
            )?)?;
        }
        Ok((gates.into_pyarray(py), out, stream))
    }

    /// The reason named by a gate code ("" for none).
    #[staticmethod]
    fn gate_names() -> Vec<&'static str> {
        GATES.to_vec()
    }

    /// [(device, bytes)] of the states changed since the last take, in the order they first
    /// changed; then forget the oldest-read quarter of held states past `keep`.
    fn take<'py>(&mut self, py: Python<'py>, keep: usize) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (dev, raw) in self.book.take(keep, &names()) {
            out.append((dev, PyBytes::new(py, &raw)))?;
        }
        if self.told.len() > 2 * self.book.states.len() + 1024 {
            let held = &self.book.states; // what was forgotten is told again when read again
            self.told.retain(|d, _| held.contains_key(d));
        }
        Ok(out)
    }

    /// [(device, visiting)] of the states changed since the last take whose visiting (inside
    /// some store or not) differs from what Python last heard or what was read: the changes to
    /// the worker's list of devices to watch for silence (most changed states do not move it).
    fn visiting(&mut self) -> Vec<(String, bool)> {
        let b = &self.book;
        let mut out = Vec::new();
        for d in b.dirty.iter() {
            let now = b.states.get(d).is_some_and(|s| !s.visits.is_empty());
            if self.told.get(d) != Some(&now) {
                self.told.insert(d.clone(), now);
                out.push((d.clone(), now));
            }
        }
        out
    }

    /// A held state's bytes (None: not held).
    fn dumps<'py>(&self, py: Python<'py>, device: &str) -> Option<Bound<'py, PyBytes>> {
        self.book
            .states
            .get(device)
            .map(|st| PyBytes::new(py, &st.dumps(&names())))
    }

    /// A device's notifications [(ts_ms, campaign, store)] (for its caps).
    fn sent(&self, device: &str) -> Vec<(i64, String, String)> {
        let names = names();
        match self.book.states.get(device) {
            None => Vec::new(),
            Some(st) => st
                .sent
                .iter()
                .map(|&(t, c, s)| (t, names.name(c).to_owned(), names.name(s).to_owned()))
                .collect(),
        }
    }

    /// Record a notification decided for a device (its state is written at the next take).
    fn add_sent(&mut self, device: &str, ts_ms: i64, campaign: &str, store: &str) -> PyResult<()> {
        let b = &mut self.book;
        let (c, s) = {
            let mut names = names();
            (names.id(campaign), names.id(store))
        };
        let st = b
            .states
            .get_mut(device)
            .ok_or_else(|| PyValueError::new_err(format!("no state held for device {device:?}")))?;
        st.sent.push((ts_ms, c, s));
        if !b.dirty.contains(device) {
            b.dirty.insert(device.to_owned());
        }
        Ok(())
    }

    /// Stop holding these devices' states (None: all of them, changed or not).
    #[pyo3(signature = (devices = None))]
    fn forget(&mut self, devices: Option<Vec<String>>) {
        match devices {
            None => {
                self.book.states.clear();
                self.book.dirty.clear();
                self.told.clear();
            }
            Some(ids) => {
                for d in ids {
                    self.told.remove(&d);
                    if !self.book.dirty.contains(&d) {
                        self.book.states.swap_remove(&d); // a changed one is still written
                    }
                }
            }
        }
    }

    fn __len__(&self) -> usize {
        self.book.states.len()
    }
}

fn rules_of(r: (f64, f64, f64, f64, f64, f64, f64)) -> Rules {
    Rules {
        min_accuracy_m: r.0,
        exit_buffer_m: r.1,
        max_age_s: r.2,
        drive_by_mps: r.3,
        impossible_mps: r.4,
        min_speed_interval_s: r.5,
        presence_timeout_s: r.6,
    }
}
