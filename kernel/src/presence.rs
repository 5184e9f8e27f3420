//! Gates, presence and campaign checks for a batch of one partition's pings, over device
//! states held here.
//!
//! A port of `decisions.presence` (gate, step) and of the per-ping loop of
//! `decisions.engine.Engine.decide`: gates, visits, and each transition's campaigns checked
//! for consent, schedule and caps (`campaigns`). What needs the catalog's texts stays in
//! Python: this returns, in ping order, every campaign decision — a suppression with its
//! reason, or a notification for Python to render. `tests/unit/test_presence_book.py` holds
//! this to the Python engine, decision for decision and state for state.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::{IndexMap, IndexSet};

use crate::campaigns::{blocked_by_caps, Ask, Caps, Due, Reasons, Schedules};
use crate::campaigns::{NO_DEVICE, NO_TOKEN, OPTED_OUT};
use crate::state::{Names, State, Visit};

/// `decisions.presence.Rules` (the TTL and cap window are the engine's).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    pub min_accuracy_m: f64,
    pub exit_buffer_m: f64,
    pub max_age_s: f64,
    pub drive_by_mps: f64,
    pub impossible_mps: f64,
    pub min_speed_interval_s: f64,
    pub presence_timeout_s: f64,
}

/// Why a ping could not start a visit (or was dropped): `GATES[code]`, 0 = passed.
pub const GATES: [&str; 7] = [
    "",
    "duplicate",
    "out_of_order",
    "stale",
    "impossible_jump",
    "low_accuracy",
    "drive_by",
];
const DUPLICATE: u8 = 1;
const OUT_OF_ORDER: u8 = 2;
const STALE: u8 = 3;
const IMPOSSIBLE_JUMP: u8 = 4;
const LOW_ACCURACY: u8 = 5;
const DRIVE_BY: u8 = 6;

/// The transition a campaign decision is for.
pub const EXIT: u8 = 1;
pub const ENTER: u8 = 2;
pub const DWELL: u8 = 3;

#[derive(Clone, Copy, Debug)]
pub struct Ping {
    pub ts: i64,
    pub lat: f64,
    pub lng: f64,
    pub acc: f64,   // NaN: not reported
    pub speed: f64, // NaN: not reported
}

/// One campaign's decision on one transition of ping `ping`: suppressed for `reason` (a
/// name number), or (None) a notification, already counted in the device's caps.
#[derive(Debug, PartialEq)]
pub struct Event {
    pub ping: usize,
    pub kind: u8, // EXIT, ENTER or DWELL
    pub store: u32,
    pub campaign: u32, // name number
    pub visit_ms: i64, // when the visit began (a kept-back enter: 0)
    pub reason: Option<u32>,
}

/// `geofences.geodesy.distance_m_one` (the kernel's one port of it).
pub use crate::exact::distance_m as distance_m_one;

/// `presence.gate`: (reason, dropped).
pub fn gate(p: &Ping, st: &State, stream_ms: i64, r: &Rules) -> (u8, bool) {
    if st.ts_ms != 0 {
        if p.ts == st.ts_ms {
            return (DUPLICATE, true);
        }
        if p.ts < st.ts_ms {
            return (OUT_OF_ORDER, true);
        }
    }
    if (stream_ms - p.ts) as f64 > r.max_age_s * 1000.0 {
        return (STALE, true);
    }
    let mut speed = p.speed;
    if let (Some(lat0), Some(lng0), true) = (st.lat, st.lng, st.ts_ms != 0) {
        let dt = (p.ts - st.ts_ms) as f64 / 1000.0;
        let moved = distance_m_one(lat0, lng0, p.lat, p.lng);
        if dt > 0.0 && moved / dt > r.impossible_mps && moved > 1000.0 {
            return (IMPOSSIBLE_JUMP, true);
        }
        if speed.is_nan() && dt >= r.min_speed_interval_s {
            speed = moved / dt;
        }
    }
    if p.acc > r.min_accuracy_m {
        return (LOW_ACCURACY, false);
    }
    if speed > r.drive_by_mps {
        return (DRIVE_BY, false);
    }
    (0, false)
}

/// The outcome of one ping for one device (`presence.Step`).
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub gate: u8,
    pub dropped: bool,
    pub entered: Vec<u32>,
    pub exited: Vec<(u32, i64)>,
    pub blocked: Vec<u32>,
}

/// `presence.step`: advance `st` by one ping. `inside`: (store, certain) in the index's
/// order; `outside(store)`: signed distance to a visited store's boundary (NaN: gone).
pub fn step(
    p: &Ping,
    st: &mut State,
    inside: &[(u32, bool)],
    outside: impl Fn(u32) -> f64,
    stream_ms: i64,
    r: &Rules,
) -> Step {
    let (reason, dropped) = gate(p, st, stream_ms, r);
    let mut out = Step {
        gate: reason,
        dropped,
        ..Step::default()
    };
    if dropped {
        return out;
    }
    let acc = if p.acc.is_nan() { 0.0 } else { p.acc };
    let holds = |s: u32| inside.iter().any(|&(x, _)| x == s);
    let timeout_ms = r.presence_timeout_s * 1000.0;
    st.visits.retain_mut(|v| {
        if holds(v.store) {
            v.last_in_ms = p.ts;
            return true;
        }
        let d = outside(v.store);
        let timed_out = (p.ts - v.last_in_ms) as f64 > timeout_ms;
        if d.is_nan() || timed_out || d - acc > r.exit_buffer_m {
            out.exited.push((v.store, v.entered_ms));
            return false;
        }
        true
    });
    for &(store, certain) in inside {
        if st.visit(store).is_some() {
            continue;
        }
        if reason != 0 || !certain {
            if !st.held.contains(&store) {
                st.held.push(store);
                out.blocked.push(store);
            }
            continue;
        }
        st.visits.push(Visit {
            store,
            entered_ms: p.ts,
            last_in_ms: p.ts,
            fired: Vec::new(),
        });
        out.entered.push(store);
    }
    if !st.held.is_empty() {
        let visits = &st.visits;
        st.held
            .retain(|&h| holds(h) && !visits.iter().any(|v| v.store == h));
    }
    st.ts_ms = p.ts;
    if reason != LOW_ACCURACY {
        st.lat = Some(p.lat);
        st.lng = Some(p.lng);
    }
    out
}

/// The catalog as presence sees it: each fence's store, each store's campaigns by trigger,
/// the campaigns' caps, the engine's rules, state TTL and longest cap window. Built once per
/// engine, shared by its partitions' books (with the schedule answers they asked).
#[derive(Default)]
pub struct Catalog {
    pub rules: Rules,
    pub ttl_ms: i64,
    pub keep_ms: i64,
    pub fence_store: Vec<u32>,
    /// What the book asks of a store, by its name number (every visit of every ping asks):
    /// one dense table, not hash maps: with 100k stores each hash lookup missed the cache
    /// two or three times, and a device inside ten fences asks ten times a ping.
    pub store: Vec<StoreInfo>,
    /// The campaigns due on each trigger, each store's a range by priority (`StoreInfo`).
    pub due: [Vec<Due>; 3],
    pub campaigns: Vec<Caps>,
    pub reasons: Reasons,
    pub schedules: Schedules,
}

/// A store in the presence catalog: its fence and its campaigns on exit, enter and dwell,
/// `Catalog::due[t][lo[t]..hi[t]]`.
#[derive(Clone, Copy, Debug)]
pub struct StoreInfo {
    pub fence: u32, // NO_FENCE: not in this catalog
    pub lo: [u32; 3],
    pub hi: [u32; 3],
}

pub const NO_FENCE: u32 = u32::MAX;
const NOT_A_STORE: StoreInfo = StoreInfo {
    fence: NO_FENCE,
    lo: [0; 3],
    hi: [0; 3],
};

/// Where a trigger's lists are kept (`Catalog::due`, `StoreInfo::lo`/`hi`).
#[inline]
fn slot(trigger: u8) -> usize {
    usize::from(trigger - EXIT)
}

/// A store's campaign on a trigger (EXIT, ENTER or DWELL), by name number.
pub type StoreDue = (u8, u32, Due);

impl Catalog {
    /// The catalog of these fences' stores and the campaigns due [(trigger, store, due)]
    /// (by priority within a store and trigger), stores by name number.
    pub fn build(
        rules: Rules,
        ttl_ms: i64,
        keep_ms: i64,
        fence_store: Vec<u32>,
        campaigns: Vec<Caps>,
        due: &[StoreDue],
        reasons: Reasons,
    ) -> Catalog {
        let top = fence_store
            .iter()
            .chain(due.iter().map(|d| &d.1))
            .max()
            .map_or(0, |&m| m as usize + 1);
        let mut store = vec![NOT_A_STORE; top];
        for (f, &s) in fence_store.iter().enumerate() {
            store[s as usize].fence = f as u32;
        }
        let mut order: Vec<usize> = (0..due.len()).collect();
        order.sort_by_key(|&i| (due[i].0, due[i].1)); // stable: each store's campaigns keep their order
        let mut lists: [Vec<Due>; 3] = Default::default();
        for i in order {
            let (t, s, d) = due[i];
            let t = slot(t);
            let info = &mut store[s as usize];
            if info.hi[t] == 0 {
                info.lo[t] = lists[t].len() as u32;
            }
            lists[t].push(d);
            info.hi[t] = lists[t].len() as u32;
        }
        Catalog {
            rules,
            ttl_ms,
            keep_ms,
            fence_store,
            store,
            due: lists,
            campaigns,
            reasons,
            schedules: Schedules::default(),
        }
    }

    /// What the catalog holds of store `s` (nothing, for a store not in it).
    #[inline]
    pub fn store(&self, s: u32) -> &StoreInfo {
        self.store.get(s as usize).unwrap_or(&NOT_A_STORE)
    }

    /// Store `s`'s fence, if it is in this catalog.
    #[inline]
    pub fn fence_of(&self, s: u32) -> Option<u32> {
        let f = self.store(s).fence;
        (f != NO_FENCE).then_some(f)
    }

    /// Store `s`'s campaigns on `trigger` (EXIT, ENTER or DWELL), by priority.
    #[inline]
    pub fn due(&self, trigger: u8, s: u32) -> &[Due] {
        let (info, t) = (self.store(s), slot(trigger));
        &self.due[t][info.lo[t] as usize..info.hi[t] as usize]
    }
}

/// One device's campaign decisions at one ping or presence check: its record asked at most
/// once, every decision pushed to `events`, each notification counted in `sent`.
struct Deciding<'e> {
    cat: &'e Catalog,
    ping: usize,
    device: &'e str,
    ts: i64,
    status: Option<u8>,
    events: &'e mut Vec<Event>,
}

impl Deciding<'_> {
    /// `Engine._campaign`: no device, opted out, schedule, caps, no token — or notify.
    fn decide<A: Ask>(
        &mut self,
        ask: &mut A,
        sent: &mut Vec<(i64, u32, u32)>,
        kind: u8,
        store: u32,
        visit_ms: i64,
        due: &Due,
    ) -> Result<(), A::Error> {
        let (cat, r) = (self.cat, &self.cat.reasons);
        let caps = &cat.campaigns[due.campaign as usize];
        let status = match self.status {
            Some(s) => s,
            None => *self.status.insert(ask.device(self.device)?),
        };
        let reason = match status {
            NO_DEVICE => Some(r.no_device),
            OPTED_OUT => Some(r.opted_out),
            _ => match cat.schedules.blocked(ask, due, caps.name, store, self.ts)? {
                Some(why) => Some(why),
                None => blocked_by_caps(caps, sent, store, self.ts, r)
                    .or((status == NO_TOKEN).then_some(r.no_token)),
            },
        };
        if reason.is_none() {
            sent.push((self.ts, caps.name, store));
        }
        self.say(kind, store, due, visit_ms, reason);
        Ok(())
    }

    /// `due`'s campaign decided on this transition: suppressed for `reason`, or notified.
    fn say(&mut self, kind: u8, store: u32, due: &Due, visit_ms: i64, reason: Option<u32>) {
        self.events.push(Event {
            ping: self.ping,
            kind,
            store,
            campaign: self.cat.campaigns[due.campaign as usize].name,
            visit_ms,
            reason,
        });
    }
}

/// One partition's device states (those read recently) and the ones changed since `take`.
pub struct Book {
    pub catalog: Arc<Catalog>,
    pub states: IndexMap<String, State, Fold>,
    pub dirty: IndexSet<String, Fold>,
    /// Indices in `dirty` of the states changed since `touched` was last drained (a device
    /// changed in several batches is listed again): the batches between two takes are many
    /// when the checkpoints come at an interval, and the watch on visits wants only the last.
    pub touched: Vec<usize>,
    /// Devices whose held state differs from the store's copy only by what a take may hold
    /// back ([`State::held_back`]): written at a take that writes everything, when they change
    /// more, or before they are forgotten.
    pub soft: IndexSet<String, Fold>,
}

/// The hasher of the device-keyed maps: foldhash, seeded per map (SipHash, std's default, was
/// ~6 % of a worker's samples at 10k fences: five lookups a ping of a ~20-byte id).
pub type Fold = foldhash::fast::RandomState;

/// A batch of one partition: `kind[k]` 0 ping, 1 presence check; matches of ping `k` are
/// `fence[ptr[k]..ptr[k + 1]]` with `certain`.
pub struct Batch<'a> {
    pub devices: &'a [&'a str],
    pub kind: &'a [u8],
    pub pings: &'a [Ping],
    pub ptr: &'a [i64],
    pub fence: &'a [i64],
    pub certain: &'a [bool],
}

impl Batch<'_> {
    fn inside(&self, k: usize, catalog: &Catalog, out: &mut Vec<(u32, bool)>) {
        out.clear();
        for j in self.ptr[k] as usize..self.ptr[k + 1] as usize {
            let store = catalog.fence_store[self.fence[j] as usize];
            match out.iter_mut().find(|(s, _)| *s == store) {
                Some(found) => found.1 = self.certain[j], // a store of several fences: one entry
                None => out.push((store, self.certain[j])),
            }
        }
    }
}

impl Book {
    pub fn new(catalog: Arc<Catalog>) -> Book {
        Book {
            catalog,
            states: IndexMap::default(),
            dirty: IndexSet::default(),
            touched: Vec::new(),
            soft: IndexSet::default(),
        }
    }

    /// The (ping, fence) pairs whose signed distance the batch may need: each visit the device
    /// had before the batch or began earlier in it, at each later ping not inside that store
    /// (`Engine._away_distances`).
    pub fn away_pairs(&self, b: &Batch) -> (Vec<usize>, Vec<i64>) {
        let mut maybe: HashMap<&str, Vec<u32>, Fold> = HashMap::default();
        let (mut ks, mut fences) = (Vec::new(), Vec::new());
        let mut inside = Vec::new();
        for k in 0..b.devices.len() {
            if b.kind[k] != 0 {
                continue;
            }
            let dev = b.devices[k];
            let visiting = maybe
                .entry(dev)
                .or_insert_with(|| match self.states.get(dev) {
                    Some(st) => st.visits.iter().map(|v| v.store).collect(),
                    None => Vec::new(),
                });
            b.inside(k, &self.catalog, &mut inside);
            for &store in visiting.iter() {
                if inside.iter().all(|&(s, _)| s != store) {
                    if let Some(f) = self.catalog.fence_of(store) {
                        ks.push(k);
                        fences.push(i64::from(f));
                    }
                }
            }
            for &(s, _) in &inside {
                if !visiting.contains(&s) {
                    visiting.push(s);
                }
            }
        }
        (ks, fences)
    }

    /// Gates, presence and campaign checks for the batch, in ping order (`Engine.decide` but
    /// the rendering of notifications): (gate code per ping, campaign decisions, stream time
    /// after the batch). `pairs`: [`Book::away_pairs`] of the batch (asked by the caller,
    /// who measures them), `away` their distances, in its order; `ask`: device records and
    /// schedule answers.
    #[allow(clippy::needless_range_loop)] // k indexes every column of the batch
    pub fn decide<A: Ask>(
        &mut self,
        b: &Batch,
        pairs: (&[usize], &[i64]),
        away: &[f64],
        stream_ms: i64,
        ask: &mut A,
    ) -> Result<(Vec<u8>, Vec<Event>, i64), A::Error> {
        let cat = Arc::clone(&self.catalog);
        let (pair_k, pair_f) = pairs;
        let mut dist: HashMap<(usize, u32), f64, Fold> =
            HashMap::with_capacity_and_hasher(pair_k.len(), Fold::default());
        for i in 0..pair_k.len().min(away.len()) {
            dist.insert(
                (pair_k[i], self.catalog.fence_store[pair_f[i] as usize]),
                away[i],
            );
        }
        let mut gates = vec![0u8; b.devices.len()];
        let mut events = Vec::new();
        let mut fresh: HashMap<&str, State, Fold> = HashMap::default(); // reset, not yet kept (Engine's _Loaded)
        let mut stream = stream_ms;
        let mut inside = Vec::new();
        for k in 0..b.devices.len() {
            let (dev, p) = (b.devices[k], &b.pings[k]);
            if b.kind[k] != 0 {
                self.check_presence(k, dev, p.ts, &mut fresh, &mut events, ask)?;
                continue;
            }
            stream = stream.max(p.ts);
            let reset = match fresh.get(dev).or_else(|| self.states.get(dev)) {
                None => true,
                Some(st) => p.ts - st.ts_ms > self.catalog.ttl_ms,
            };
            if reset {
                fresh.insert(dev, State::default());
            }
            b.inside(k, &self.catalog, &mut inside);
            let st = match fresh.get_mut(dev) {
                Some(st) => st,
                None => self.states.get_mut(dev).expect("looked up above"),
            };
            let out = step(
                p,
                st,
                &inside,
                |s| *dist.get(&(k, s)).unwrap_or(&f64::NAN),
                stream,
                &self.catalog.rules,
            );
            gates[k] = out.gate;
            if out.dropped {
                continue;
            }
            let mut at = Deciding {
                cat: &cat,
                ping: k,
                device: dev,
                ts: p.ts,
                status: None,
                events: &mut events,
            };
            let why = cat.reasons.gate[usize::from(out.gate)];
            for &s in &out.blocked {
                for d in cat.due(ENTER, s) {
                    at.say(ENTER, s, d, 0, Some(why));
                }
            }
            for &(s, began) in &out.exited {
                for d in cat.due(EXIT, s) {
                    at.decide(ask, &mut st.sent, EXIT, s, began, d)?;
                }
            }
            for &s in &out.entered {
                for d in cat.due(ENTER, s) {
                    at.decide(ask, &mut st.sent, ENTER, s, p.ts, d)?;
                }
            }
            for v in st.visits.iter_mut() {
                let due = cat.due(DWELL, v.store);
                if due.is_empty() || inside.iter().all(|&(s, _)| s != v.store) {
                    continue;
                }
                for d in due {
                    let name = cat.campaigns[d.campaign as usize].name;
                    // the time first: most visits are not due, and their `fired` is not read
                    if (p.ts - v.entered_ms) as f64 >= d.dwell_ms && !v.fired.contains(&name) {
                        v.fired.push(name);
                        at.decide(ask, &mut st.sent, DWELL, v.store, v.entered_ms, d)?;
                    }
                }
            }
            self.keep(dev, &mut fresh);
        }
        Ok((gates, events, stream))
    }

    /// `Engine._check_presence`: end the visits a silent device has not confirmed in time.
    #[allow(clippy::too_many_arguments)]
    fn check_presence<'a, A: Ask>(
        &mut self,
        k: usize,
        dev: &'a str,
        ts: i64,
        fresh: &mut HashMap<&'a str, State, Fold>,
        events: &mut Vec<Event>,
        ask: &mut A,
    ) -> Result<(), A::Error> {
        let cat = Arc::clone(&self.catalog);
        let timeout_ms = cat.rules.presence_timeout_s * 1000.0;
        let st = match fresh.get_mut(dev) {
            Some(st) => st,
            None => match self.states.get_mut(dev) {
                Some(st) => st,
                None => return Ok(()),
            },
        };
        if ts <= st.ts_ms
            || !st
                .visits
                .iter()
                .any(|v| (ts - v.last_in_ms) as f64 > timeout_ms)
        {
            return Ok(());
        }
        let mut gone = Vec::new();
        st.visits.retain(|v| {
            let keep = (ts - v.last_in_ms) as f64 <= timeout_ms;
            if !keep {
                gone.push((v.store, v.entered_ms));
            }
            keep
        });
        let mut at = Deciding {
            cat: &cat,
            ping: k,
            device: dev,
            ts,
            status: None,
            events,
        };
        for (s, began) in gone {
            for d in cat.due(EXIT, s) {
                at.decide(ask, &mut st.sent, EXIT, s, began, d)?;
            }
        }
        self.keep(dev, fresh);
        Ok(())
    }

    /// The device's state changed: keep it (a reset one replaces what was read) and mark it.
    fn keep(&mut self, dev: &str, fresh: &mut HashMap<&str, State, Fold>) {
        if let Some(st) = fresh.remove(dev) {
            self.hold(dev, st);
        }
        let i = match self.dirty.get_index_of(dev) {
            Some(i) => i,
            None => self.dirty.insert_full(dev.to_owned()).0,
        };
        self.touched.push(i);
    }

    /// Hold `st` as the device's state, in place of the one held if any, which keeps what the
    /// worker was told of the device ([`State::told`]: of the device, not of this state).
    pub fn hold(&mut self, dev: &str, mut st: State) {
        match self.states.get_mut(dev) {
            Some(old) => {
                st.told = old.told;
                *old = st;
            }
            None => {
                self.states.insert(dev.to_owned(), st);
            }
        }
    }

    /// The changed states, serialised (notifications past the cap window forgotten), in the
    /// order they first changed; then the oldest-read quarter forgotten past `keep` states.
    /// A state changed only in its last position, ping time and visits' last-seen times for
    /// less than `refresh_ms` of its ping time since the store's copy is held back
    /// ([`State::held_back`]) unless `everything`; held back states are written before they
    /// are forgotten.
    pub fn take(
        &mut self,
        keep: usize,
        refresh_ms: i64,
        everything: bool,
        names: &Names,
    ) -> Vec<(String, Vec<u8>)> {
        let everything = everything || keep == 0; // nothing held: nothing may be held back
        let dirty = std::mem::take(&mut self.dirty);
        self.touched.clear();
        let mut out = Vec::with_capacity(dirty.len());
        let keep_ms = self.catalog.keep_ms;
        for dev in dirty {
            if let Some(st) = self.states.get_mut(&dev) {
                st.prune_sent(keep_ms);
                if !everything && st.held_back(refresh_ms) {
                    self.soft.insert(dev);
                    continue;
                }
                self.soft.swap_remove(&dev);
                out.push((dev, write(st, names)));
            }
        }
        let states = &mut self.states;
        let forget = if keep == 0 {
            states.len()
        } else if states.len() > keep {
            states.len() - keep * 3 / 4
        } else {
            0
        };
        if everything {
            for dev in std::mem::take(&mut self.soft) {
                if let Some(st) = states.get_mut(&dev) {
                    out.push((dev, write(st, names)));
                }
            }
        } else if forget > 0 && !self.soft.is_empty() {
            for (dev, st) in states.get_range_mut(..forget).into_iter().flatten() {
                if self.soft.swap_remove(dev) {
                    out.push((dev.clone(), write(st, names)));
                }
            }
        }
        states.drain(..forget);
        out
    }
}

/// A state's bytes for the store, noted as what the store holds.
fn write(st: &mut State, names: &Names) -> Vec<u8> {
    st.mark_stored();
    st.dumps(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        min_accuracy_m: 100.0,
        exit_buffer_m: 30.0,
        max_age_s: 600.0,
        drive_by_mps: 7.0,
        impossible_mps: 70.0,
        min_speed_interval_s: 10.0,
        presence_timeout_s: 1800.0,
    };

    fn ping(ts: i64, lat: f64, lng: f64) -> Ping {
        Ping {
            ts,
            lat,
            lng,
            acc: 10.0,
            speed: f64::NAN,
        }
    }

    fn due(campaign: u32, dwell_ms: f64) -> Due {
        Due {
            campaign,
            group: campaign,
            dwell_ms,
        }
    }

    #[test]
    fn the_dense_store_table_answers_as_the_lists_it_was_built_from() {
        // stores 3, 0, 2 have fences 0, 1, 2; 7 has campaigns but no fence; 1 and 9 are unknown
        let listed = [
            (DWELL, 2, due(0, 60_000.0)),
            (ENTER, 0, due(3, 0.0)),
            (DWELL, 0, due(1, 1.0)),
            (EXIT, 2, due(4, 0.0)),
            (DWELL, 2, due(2, 30_000.0)),
            (ENTER, 7, due(3, 0.0)),
            (ENTER, 0, due(5, 0.0)),
            (DWELL, 7, due(0, 5.0)),
        ];
        let cat = Catalog::build(
            RULES,
            1,
            1,
            vec![3, 0, 2],
            vec![],
            &listed,
            Reasons::default(),
        );
        assert_eq!(cat.fence_of(3), Some(0));
        assert_eq!(cat.fence_of(2), Some(2));
        assert_eq!(cat.fence_of(1), None);
        assert_eq!(cat.fence_of(7), None);
        assert_eq!(cat.fence_of(9), None);
        assert_eq!(cat.due(DWELL, 2), &[due(0, 60_000.0), due(2, 30_000.0)]); // priority order kept
        assert_eq!(cat.due(DWELL, 0), &[due(1, 1.0)]);
        assert_eq!(cat.due(DWELL, 7), &[due(0, 5.0)]);
        assert!(cat.due(DWELL, 3).is_empty() && cat.due(DWELL, 9).is_empty());
        assert_eq!(cat.due(ENTER, 0), &[due(3, 0.0), due(5, 0.0)]);
        assert_eq!(cat.due(ENTER, 7), &[due(3, 0.0)]);
        assert!(cat.due(ENTER, 2).is_empty() && cat.due(ENTER, 9).is_empty());
        assert_eq!(cat.due(EXIT, 2), &[due(4, 0.0)]);
        assert!(cat.due(EXIT, 0).is_empty() && cat.due(EXIT, 9).is_empty());
    }

    #[test]
    fn distance_is_the_python_model() {
        // geofences.geodesy.distance_m_one(35.0, 139.0, 35.001, 139.001)
        let d = distance_m_one(35.0, 139.0, 35.001, 139.001);
        assert!((d - 143.5).abs() < 0.5, "{d}");
        assert_eq!(
            distance_m_one(0.0, 179.9999, 0.0, -179.9999),
            distance_m_one(0.0, -0.0001, 0.0, 0.0001)
        );
    }

    #[test]
    fn gates_in_order() {
        let st = State {
            ts_ms: 100_000,
            lat: Some(35.0),
            lng: Some(139.0),
            ..State::default()
        };
        assert_eq!(
            gate(&ping(100_000, 35.0, 139.0), &st, 100_000, &RULES),
            (DUPLICATE, true)
        );
        assert_eq!(
            gate(&ping(99_000, 35.0, 139.0), &st, 100_000, &RULES),
            (OUT_OF_ORDER, true)
        );
        assert_eq!(
            gate(&ping(200_000, 35.0, 139.0), &st, 900_000, &RULES),
            (STALE, true)
        );
        assert_eq!(
            gate(&ping(110_000, 35.1, 139.0), &st, 0, &RULES),
            (IMPOSSIBLE_JUMP, true)
        );
        assert_eq!(
            gate(&ping(120_000, 35.002, 139.0), &st, 0, &RULES),
            (DRIVE_BY, false)
        );
        let vague = Ping {
            acc: 150.0,
            ..ping(120_000, 35.0, 139.0)
        };
        assert_eq!(gate(&vague, &st, 0, &RULES), (LOW_ACCURACY, false));
        assert_eq!(
            gate(&ping(120_000, 35.0001, 139.0), &st, 0, &RULES),
            (0, false)
        );
    }

    #[test]
    fn enter_hold_exit() {
        let mut st = State::default();
        let far = |_| 100.0;
        let out = step(
            &ping(1000, 35.0, 139.0),
            &mut st,
            &[(7, false)],
            far,
            1000,
            &RULES,
        );
        assert_eq!((out.blocked, st.held.clone()), (vec![7], vec![7]));
        let out = step(
            &ping(20_000, 35.0, 139.0),
            &mut st,
            &[(7, true)],
            far,
            20_000,
            &RULES,
        );
        assert_eq!((out.entered, st.held.len()), (vec![7], 0));
        let near = step(
            &ping(40_000, 35.0, 139.0),
            &mut st,
            &[],
            |_| 20.0,
            40_000,
            &RULES,
        );
        assert!(near.exited.is_empty() && st.visit(7).is_some());
        let out = step(
            &ping(60_000, 35.0, 139.0),
            &mut st,
            &[],
            far,
            60_000,
            &RULES,
        );
        assert_eq!(out.exited, vec![(7, 20_000)]);
    }
}
