//! The Python face of [`presence::Book`]: `geofences._kernel.PresenceBook`, one per
//! partition, driven by `streams.device_view.BookStates` and `Engine.decide`.

use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use std::sync::Arc;

use crate::campaigns::{Ask, Caps, Due, Reasons};
use crate::presence::{Batch, Book, Catalog, Fold, Ping, Rules, StoreDue, GATES};
use crate::records::{json_str, Written};
use crate::state::{names, Names, State, Told};

#[pyclass(module = "geofences._kernel", unsendable)]
pub struct PresenceBook {
    book: Book,
    /// The catalog's version as a JSON string, for the records of its decisions.
    version: String,
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
    version: String, // as a JSON string
}

#[pymethods]
impl PresenceCatalog {
    /// Each fence's store id; the campaigns [(id, cooldown, campaign window, campaign max,
    /// device window, device max)] (windows in ms, -1: no such cap); the campaigns due
    /// [(trigger, store, campaign number, schedule group, dwell ms)] (trigger 1 exit, 2 enter,
    /// 3 dwell; by priority within a store and trigger); the rules (min_accuracy_m,
    /// exit_buffer_m, max_age_s, drive_by_mps, impossible_mps, min_speed_interval_s,
    /// presence_timeout_s), the state TTL, the longest cap window (ms) and the catalog's
    /// version (written in its decisions' records).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fence_stores: Vec<String>,
        campaigns: Vec<(String, i64, i64, i64, i64, i64)>,
        due: Vec<(u8, String, u32, u32, f64)>,
        rules: (f64, f64, f64, f64, f64, f64, f64),
        ttl_ms: i64,
        keep_ms: i64,
        version: &str,
    ) -> PyResult<Self> {
        let mut names = names();
        let fences = fence_stores.iter().map(|s| names.id(s)).collect();
        let caps: Vec<Caps> = campaigns
            .iter()
            .map(|(id, cooldown, cw, cmax, dw, dmax)| Caps {
                name: names.id(id),
                cooldown_ms: *cooldown,
                campaign_ms: *cw,
                campaign_max: *cmax,
                device_ms: *dw,
                device_max: *dmax,
            })
            .collect();
        let mut listed: Vec<StoreDue> = Vec::with_capacity(due.len());
        for (trigger, store, campaign, group, dwell_ms) in &due {
            if !(1..=3).contains(trigger) || *campaign as usize >= caps.len() {
                return Err(PyValueError::new_err(format!(
                    "due campaign {campaign} on trigger {trigger} at {store:?}: no such campaign or trigger"
                )));
            }
            let d = Due {
                campaign: *campaign,
                group: *group,
                dwell_ms: *dwell_ms,
            };
            listed.push((*trigger, names.id(store), d));
        }
        let reasons = reasons(&mut names);
        let cat = Catalog::build(
            rules_of(rules),
            ttl_ms,
            keep_ms,
            fences,
            caps,
            &listed,
            reasons,
        );
        let mut quoted = String::new();
        json_str(&mut quoted, version);
        Ok(PresenceCatalog {
            catalog: Arc::new(cat),
            version: quoted,
        })
    }
}

/// The reasons the book says by itself, numbered.
fn reasons(names: &mut Names) -> Reasons {
    let mut gate = [0; 7];
    for (code, name) in GATES.iter().enumerate() {
        gate[code] = names.id(if code == 0 {
            "uncertain_position"
        } else {
            name
        });
    }
    Reasons {
        no_device: names.id("no_device"),
        opted_out: names.id("opted_out"),
        no_token: names.id("no_token"),
        cooldown: names.id("cooldown"),
        campaign_cap: names.id("campaign_cap"),
        device_cap: names.id("device_cap"),
        gate,
    }
}

/// The engine's answers, asked from Rust: `device(device_id) -> int` (campaigns::NO_DEVICE...)
/// and `schedule(campaign_id, store_id, ts_ms) -> (reason | None, whole_minute)`.
struct PyAsk<'a, 'py> {
    device: &'a Bound<'py, PyAny>,
    schedule: &'a Bound<'py, PyAny>,
}

impl Ask for PyAsk<'_, '_> {
    type Error = PyErr;

    fn device(&mut self, device: &str) -> PyResult<u8> {
        self.device.call1((device,))?.extract()
    }

    fn schedule(&mut self, campaign: u32, store: u32, ts: i64) -> PyResult<(Option<u32>, bool)> {
        let (c, s) = {
            let names = names();
            (
                names.name(campaign).to_owned(),
                names.name(store).to_owned(),
            )
        };
        let (reason, whole): (Option<String>, bool) = self.schedule.call1((c, s, ts))?.extract()?;
        Ok((reason.map(|r| names().id(&r)), whole))
    }
}

#[pymethods]
impl PresenceBook {
    #[new]
    fn new() -> Self {
        PresenceBook {
            book: Book::new(Arc::new(Catalog::default())),
            version: "\"\"".to_owned(),
        }
    }

    /// Decide with this catalog from now on (the states held stay: they name stores by id).
    fn configure(&mut self, catalog: &PresenceCatalog) {
        self.book.catalog = Arc::clone(&catalog.catalog);
        self.version.clone_from(&catalog.version);
    }

    /// The devices of `devices` (a list of str) whose state is not held here, once each.
    fn missing(&self, devices: &Bound<'_, PyList>) -> PyResult<Vec<String>> {
        let mut seen: std::collections::HashSet<&str, Fold> = Default::default();
        let items = items(devices)?;
        Ok(strs(&items)?
            .into_iter()
            .filter(|d| !self.book.states.contains_key(*d) && seen.insert(*d))
            .map(str::to_owned)
            .collect())
    }

    /// Hold a device's state read from its bytes (`dirty`: and write it at the next take;
    /// else they are what the store holds).
    #[pyo3(signature = (device, raw, dirty = false))]
    fn load(&mut self, device: &str, raw: &[u8], dirty: bool) -> PyResult<()> {
        let mut st = State::loads(raw, &mut names())
            .map_err(|e| PyValueError::new_err(format!("state of device {device:?}: {e}")))?;
        if dirty {
            let (i, _) = self.book.dirty.insert_full(device.to_owned());
            self.book.touched.push(i);
            self.book.hold(device, st);
        } else {
            st.mark_stored();
            st.told = Told(Some(!st.visits.is_empty())); // the worker's watch began from the store
            self.book.states.insert(device.to_owned(), st);
        }
        Ok(())
    }

    /// Gates, presence and campaign checks of a poll of one or more partitions, in one call
    /// (a call a partition cost ~25 µs more each, ~0.3 ms a poll of 12); see
    /// `presence::Book::decide`. `books[j]` decides pings `bounds[j]..bounds[j + 1]` (its
    /// partition's) from `stream_ms[j]`; the columns are the whole poll's (`ptr` indexes
    /// `fence` for all of it). `distances(fences, lat, lng)` gives signed distances to fence
    /// boundaries, asked once for every book; `device[j]` and `schedule` answer as [`PyAsk`]
    /// says. Returns, for each book in order, (gate codes, [(ping, trigger, store, campaign,
    /// visit_ms)] of the notifications to render, stream_ms, the suppressed decisions written
    /// as records: [`Suppressions`]), each in decision order.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn decide_many<'py>(
        py: Python<'py>,
        mut books: Vec<PyRefMut<'py, PresenceBook>>,
        bounds: Vec<usize>,
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
        stream_ms: Vec<i64>,
        distances: &Bound<'py, PyAny>,
        device: Vec<Bound<'py, PyAny>>,
        schedule: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Decided<'py>>> {
        let cols = Columns::of(&kind, &ts, &lat, &lng, &acc, &speed, &ptr, &fence, &certain)?;
        let mut refs: Vec<&mut PresenceBook> = books.iter_mut().map(|b| &mut **b).collect();
        let ask = Asking {
            distances,
            device,
            schedule,
        };
        decide_poll(py, &mut refs, &bounds, devices, &cols, &stream_ms, &ask)
    }

    /// The reason named by a gate code ("" for none).
    #[staticmethod]
    fn gate_names() -> Vec<&'static str> {
        GATES.to_vec()
    }

    /// ([device], [bytes]) of the states changed since the last take, in the order they first
    /// changed, but those a take may hold back for `refresh_ms` (`presence::Book::take`) unless
    /// `everything`; then forget the oldest-read quarter of held states past `keep`. Two lists, not
    /// a tuple a state: a second's states at a live 120k pings/s are ~60k, and as many tuples
    /// (objects the garbage collector tracks) set off a third of the take's time in collections.
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (keep, refresh_ms = 0, everything = false))]
    fn take<'py>(
        &mut self,
        py: Python<'py>,
        keep: usize,
        refresh_ms: i64,
        everything: bool,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let taken = self.book.take(keep, refresh_ms, everything, &names());
        let ids = PyList::empty(py);
        let raws = PyList::empty(py);
        for (dev, raw) in taken {
            ids.append(PyString::new(py, &dev))?;
            raws.append(PyBytes::new(py, &raw))?;
        }
        Ok((ids, raws))
    }

    /// [(device, visiting)] of the states changed since the last call (or take) whose visiting
    /// (inside some store or not) differs from what Python last heard or what was read (the
    /// state's [`Told`]): the changes to the worker's list of devices to watch for silence
    /// (most changed states do not move it).
    fn visiting(&mut self) -> Vec<(String, bool)> {
        let b = &mut self.book;
        let mut out = Vec::new();
        for i in b.touched.drain(..) {
            let Some(d) = b.dirty.get_index(i) else {
                continue;
            };
            match b.states.get_mut(d) {
                Some(st) => {
                    let now = !st.visits.is_empty();
                    if st.told.0 != Some(now) {
                        st.told = Told(Some(now));
                        out.push((d.clone(), now));
                    }
                }
                None => out.push((d.clone(), false)), // forgotten since it changed
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

    /// Stop holding these devices' states (None: all of them, changed or not); changes held
    /// back for them are dropped too (the store deleted them, or a failure made them unknown).
    #[pyo3(signature = (devices = None))]
    fn forget(&mut self, devices: Option<Vec<String>>) {
        match devices {
            None => {
                self.book.states.clear();
                self.book.dirty.clear();
                self.book.touched.clear();
                self.book.soft.clear();
            }
            Some(ids) => {
                for d in ids {
                    self.book.soft.swap_remove(&d);
                    if !self.book.dirty.contains(&d) {
                        self.book.states.swap_remove(&d); // a changed one is still written
                    } else if let Some(st) = self.book.states.get_mut(&d) {
                        st.told = Told(None); // the worker forgot it: told again
                    }
                }
            }
        }
    }

    fn __len__(&self) -> usize {
        self.book.states.len()
    }
}

/// One partition's answer to `decide_many`: (gate codes, notifications to render, stream_ms, the
/// suppressions written).
type Decided<'py> = (
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyList>,
    i64,
    Suppressions,
);

/// A poll's columns as slices: (kind, ts, lat, lng, acc, speed) a ping; `ptr` into `fence`
/// and `certain`.
struct Columns<'a> {
    kind: &'a [u8],
    ts: &'a [i64],
    lat: &'a [f64],
    lng: &'a [f64],
    acc: &'a [f64],
    speed: &'a [f64],
    ptr: &'a [i64],
    fence: &'a [i64],
    certain: &'a [bool],
}

impl<'a> Columns<'a> {
    #[allow(clippy::too_many_arguments)]
    fn of(
        kind: &'a PyReadonlyArray1<'_, u8>,
        ts: &'a PyReadonlyArray1<'_, i64>,
        lat: &'a PyReadonlyArray1<'_, f64>,
        lng: &'a PyReadonlyArray1<'_, f64>,
        acc: &'a PyReadonlyArray1<'_, f64>,
        speed: &'a PyReadonlyArray1<'_, f64>,
        ptr: &'a PyReadonlyArray1<'_, i64>,
        fence: &'a PyReadonlyArray1<'_, i64>,
        certain: &'a PyReadonlyArray1<'_, bool>,
    ) -> PyResult<Columns<'a>> {
        Ok(Columns {
            kind: kind.as_slice()?,
            ts: ts.as_slice()?,
            lat: lat.as_slice()?,
            lng: lng.as_slice()?,
            acc: acc.as_slice()?,
            speed: speed.as_slice()?,
            ptr: ptr.as_slice()?,
            fence: fence.as_slice()?,
            certain: certain.as_slice()?,
        })
    }

    /// That every column has `n` rows and `ptr` indexes `fence` and `certain`.
    fn check(&self, n: usize) -> PyResult<()> {
        let c = self;
        if [
            c.kind.len(),
            c.ts.len(),
            c.lat.len(),
            c.lng.len(),
            c.acc.len(),
            c.speed.len(),
        ] != [n; 6]
            || c.ptr.len() != n + 1
        {
            return Err(PyValueError::new_err(
                "devices, kind, ts, lat, lng, acc, speed and ptr differ in length",
            ));
        }
        if c.ptr.first() != Some(&0)
            || c.ptr.windows(2).any(|w| w[0] > w[1])
            || c.ptr[n] as usize != c.fence.len()
            || c.certain.len() != c.fence.len()
        {
            return Err(PyValueError::new_err(
                "ptr does not index fence and certain",
            ));
        }
        Ok(())
    }
}

/// What the books ask Python while deciding a poll: distances to fences (once a poll),
/// device records (`device[j]` for book `j`) and schedule answers.
struct Asking<'a, 'py> {
    distances: &'a Bound<'py, PyAny>,
    device: Vec<Bound<'py, PyAny>>,
    schedule: &'a Bound<'py, PyAny>,
}

/// Each book's decisions over its partition's slice of the poll (see `decide_many`).
fn decide_poll<'py>(
    py: Python<'py>,
    books: &mut [&mut PresenceBook],
    bounds: &[usize],
    devices: &Bound<'py, PyList>,
    cols: &Columns,
    stream_ms: &[i64],
    ask: &Asking<'_, 'py>,
) -> PyResult<Vec<Decided<'py>>> {
    let items = items(devices)?;
    let devs = strs(&items)?;
    let n = devs.len();
    cols.check(n)?;
    let m = books.len();
    if bounds.len() != m + 1
        || bounds.first() != Some(&0)
        || bounds.windows(2).any(|w| w[0] > w[1])
        || bounds[m] != n
        || stream_ms.len() != m
        || ask.device.len() != m
    {
        return Err(PyValueError::new_err(
            "bounds, stream_ms and device do not match the books and the pings",
        ));
    }
    let Columns {
        kind,
        ts,
        lat,
        lng,
        acc,
        speed,
        ptr,
        fence,
        certain,
    } = *cols;
    for (j, book) in books.iter().enumerate() {
        let fences = book.book.catalog.fence_store.len() as i64;
        let mine = &fence[ptr[bounds[j]] as usize..ptr[bounds[j + 1]] as usize];
        if let Some(bad) = mine.iter().find(|&&f| f < 0 || f >= fences) {
            return Err(PyValueError::new_err(format!(
                "fence {bad} is not in the configured catalog"
            )));
        }
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
    let batch = |j: usize| {
        let (a, b) = (bounds[j], bounds[j + 1]);
        Batch {
            devices: &devs[a..b],
            kind: &kind[a..b],
            pings: &pings[a..b],
            ptr: &ptr[a..=b],
            fence,
            certain,
        }
    };
    // every book's (ping, fence) pairs, measured in one call
    let pairs: Vec<(Vec<usize>, Vec<i64>)> = (0..m)
        .map(|j| books[j].book.away_pairs(&batch(j)))
        .collect();
    let total: usize = pairs.iter().map(|(k, _)| k.len()).sum();
    let away: Vec<f64> = if total == 0 {
        Vec::new()
    } else {
        let mut pf = Vec::with_capacity(total);
        let (mut plat, mut plng) = (Vec::with_capacity(total), Vec::with_capacity(total));
        for (j, (pk, f)) in pairs.iter().enumerate() {
            pf.extend_from_slice(f);
            plat.extend(pk.iter().map(|&k| lat[bounds[j] + k]));
            plng.extend(pk.iter().map(|&k| lng[bounds[j] + k]));
        }
        let got = ask.distances.call1((
            pf.into_pyarray(py),
            plat.into_pyarray(py),
            plng.into_pyarray(py),
        ))?;
        let got = got.downcast::<PyArray1<f64>>()?.readonly();
        let got = got.as_slice()?;
        if got.len() != total {
            return Err(PyValueError::new_err(
                "distances returned the wrong number of values",
            ));
        }
        got.to_vec()
    };
    let mut out = Vec::with_capacity(m);
    let mut at = 0;
    for (j, book) in books.iter_mut().enumerate() {
        let b = batch(j);
        let (pk, pf) = &pairs[j];
        let mine = &away[at..at + pk.len()];
        at += pk.len();
        let mut asking = PyAsk {
            device: &ask.device[j],
            schedule: ask.schedule,
        };
        let (gates, events, stream) =
            book.book
                .decide(&b, (pk, pf), mine, stream_ms[j], &mut asking)?;
        let ts = &ts[bounds[j]..bounds[j + 1]];
        out.push(answer(
            py,
            events,
            gates,
            stream,
            b.devices,
            ts,
            &book.version,
        )?);
    }
    Ok(out)
}

/// A book's events as `decide_many` returns them: the notifications to render as tuples, the
/// suppressions written as records.
fn answer<'py>(
    py: Python<'py>,
    events: Vec<crate::presence::Event>,
    gates: Vec<u8>,
    stream: i64,
    devs: &[&str],
    ts: &[i64],
    version: &str,
) -> PyResult<Decided<'py>> {
    let names = names();
    let out = PyList::empty(py);
    let mut written = Written::default();
    for e in events {
        if e.reason.is_some() {
            let k = e.ping;
            written.add(&names, e, devs[k], ts[k], version);
            continue;
        }
        out.append(PyTuple::new(
            py,
            [
                e.ping.into_pyobject(py)?.into_any(),
                e.kind.into_pyobject(py)?.into_any(),
                names.name(e.store).into_pyobject(py)?.into_any(),
                names.name(e.campaign).into_pyobject(py)?.into_any(),
                e.visit_ms.into_pyobject(py)?.into_any(),
            ],
        )?)?;
    }
    let transitions = written.transitions(|k| (devs[k], ts[k]));
    let suppressed = Suppressions {
        keys: written
            .events
            .iter()
            .map(|e| devs[e.ping].to_owned())
            .collect(),
        ts: written.events.iter().map(|e| ts[e.ping]).collect(),
        transitions,
        written,
    };
    Ok((gates.into_pyarray(py), out, stream, suppressed))
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

/// A batch's suppressed decisions, written by the book (`records::Written`): the records for
/// the decisions topic and the counts the metrics need, without a Python object per decision.
#[pyclass(frozen, module = "geofences._kernel")]
pub struct Suppressions {
    written: Written,
    keys: Vec<String>, // each decision's device
    ts: Vec<i64>,      // and its ping's time
    transitions: [usize; 3],
}

#[pymethods]
impl Suppressions {
    fn __len__(&self) -> usize {
        self.written.ends.len()
    }

    /// [(key, value)]: each decision's record for the decisions topic (keyed by device).
    fn records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut last: Option<(&str, Bound<'py, PyBytes>)> = None;
        for (i, key) in self.keys.iter().enumerate() {
            let k = match &last {
                Some((d, b)) if *d == key.as_str() => b.clone(),
                _ => {
                    let b = PyBytes::new(py, key.as_bytes());
                    last = Some((key.as_str(), b.clone()));
                    b
                }
            };
            let v = PyBytes::new(py, self.written.value(i).as_bytes());
            out.append(PyTuple::new(py, [k.into_any(), v.into_any()])?)?;
        }
        Ok(out)
    }

    /// [(ping, trigger, store, campaign, visit_ms, reason)] of each decision, for rows.
    #[allow(clippy::type_complexity)]
    fn fields(&self) -> Vec<(usize, u8, String, String, i64, String)> {
        let names = names();
        self.written
            .events
            .iter()
            .map(|e| {
                let reason = e.reason.expect("a suppression has a reason");
                (
                    e.ping,
                    e.kind,
                    names.name(e.store).to_owned(),
                    names.name(e.campaign).to_owned(),
                    e.visit_ms,
                    names.name(reason).to_owned(),
                )
            })
            .collect()
    }

    /// [(reason, decisions)] in the order the reasons first appear.
    fn labels(&self) -> Vec<(String, usize)> {
        let names = names();
        self.written
            .labels()
            .into_iter()
            .map(|(r, n)| (names.name(r).to_owned(), n))
            .collect()
    }

    /// Each decision's ping time (epoch ms).
    fn ts_ms<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.ts.clone().into_pyarray(py)
    }

    /// Distinct transitions (device, time, store, trigger) among the decisions, as [(trigger
    /// code, count)] for exit, enter, dwell: a transition with several campaigns is one.
    fn transitions(&self) -> Vec<(u8, usize)> {
        use crate::presence::EXIT;
        (0..3u8)
            .map(|i| (EXIT + i, self.transitions[i as usize]))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}
