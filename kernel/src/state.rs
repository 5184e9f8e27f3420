//! A device's presence state in native form, and its serialised form — the same bytes
//! contract as `decisions.state.DeviceState` (format 2 written; formats 1 and 2, plain or
//! zlib-packed, read), so the changelog does not care which side wrote a state.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};

use serde_json::Value;

pub const FORMAT: i64 = 2;
pub const PACKED: u8 = b'Z';
pub const PACK_OVER: usize = 768;

/// Store and campaign ids, each kept once and named by a number.
///
/// A name of up to [`INLINE`] bytes is kept in its own fixed slot, so reading it is one memory
/// access into one array: with 200k names, names kept as separate heap strings cost two
/// dependent cache misses each; writing a state (~25 names) took 3.7 µs that way and 1.45 µs
/// with slots (`cargo test --release --lib -- --ignored --nocapture names_inline_timing`).
#[derive(Default)]
pub struct Names {
    slots: Vec<Slot>,
    long: Vec<String>, // names longer than INLINE, by the number in their slot
    of: HashMap<String, u32>,
}

/// Bytes of a name kept inline in its slot.
pub const INLINE: usize = 30;
const LONG: u8 = u8::MAX;

/// One name: its bytes (or the number of its long form) and whether JSON needs it escaped.
#[derive(Clone, Copy)]
#[repr(align(32))]
struct Slot {
    len: u8, // LONG: in `long`, at the index in the first 4 bytes
    plain: bool,
    bytes: [u8; INLINE],
}

impl Names {
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.of.get(name) {
            return i;
        }
        let i = self.slots.len() as u32;
        let mut slot = Slot {
            len: LONG,
            plain: plain(name),
            bytes: [0; INLINE],
        };
        if name.len() <= INLINE {
            slot.len = name.len() as u8;
            slot.bytes[..name.len()].copy_from_slice(name.as_bytes());
        } else {
            slot.bytes[..4].copy_from_slice(&(self.long.len() as u32).to_le_bytes());
            self.long.push(name.to_owned());
        }
        self.slots.push(slot);
        self.of.insert(name.to_owned(), i);
        i
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.of.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        let slot = &self.slots[id as usize];
        if slot.len == LONG {
            let at = u32::from_le_bytes(slot.bytes[..4].try_into().expect("4 bytes"));
            return &self.long[at as usize];
        }
        // SAFETY: the bytes were copied whole from a &str of exactly this length
        unsafe { std::str::from_utf8_unchecked(&slot.bytes[..slot.len as usize]) }
    }

    /// Name `id` as a JSON string onto `s` (the bytes serde_json writes).
    pub fn write_json(&self, s: &mut String, id: u32) {
        let name = self.name(id);
        if self.slots[id as usize].plain {
            s.push('"');
            s.push_str(name);
            s.push('"');
        } else {
            crate::records::json_str(s, name);
        }
    }
}

/// Whether JSON writes `v` as it is, between quotes.
pub fn plain(v: &str) -> bool {
    v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The process's store and campaign ids, shared by every book and presence catalog (so a
/// catalog is built once for all partitions, and a state's ids mean the same everywhere).
pub fn names() -> std::sync::MutexGuard<'static, Names> {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<Names>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Inside a store's fence since `entered_ms`; `fired`: its dwell campaigns already decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Visit {
    pub store: u32,
    pub entered_ms: i64,
    pub last_in_ms: i64,
    pub fired: Vec<u32>,
}

/// `decisions.state.DeviceState`; visits in the order they began (a Python dict's order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub ts_ms: i64,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    pub visits: Vec<Visit>,
    pub sent: Vec<(i64, u32, u32)>, // (ts_ms, campaign, store)
    pub held: Vec<u32>,
    pub stored: Stored,
    pub told: Told,
}

/// What the store holds of a state, as far as its book knows: the [`State::material`]
/// fingerprint and the ping time of the copy last read or written (None: unknown, or none).
/// Bookkeeping, not state: two states are equal whatever their `stored` says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stored(pub Option<(u64, i64)>);

impl PartialEq for Stored {
    fn eq(&self, _: &Stored) -> bool {
        true
    }
}

/// Whether the device was inside some store when the worker last heard of it (None: not
/// told since this state was read): its watch on silent devices learns only the changes
/// (`PresenceBook.visiting`). Kept in the state, not in a map of its own beside the states:
/// a second lookup of the device a ping, a cache miss each at ~90k devices. Bookkeeping,
/// not state: two states are equal whatever their `told` says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Told(pub Option<bool>);

impl PartialEq for Told {
    fn eq(&self, _: &Told) -> bool {
        true
    }
}

impl State {
    pub fn visit(&self, store: u32) -> Option<&Visit> {
        self.visits.iter().find(|v| v.store == store)
    }

    /// Forget notifications older than `keep_ms` before the last ping (no cap looks further).
    pub fn prune_sent(&mut self, keep_ms: i64) {
        let since = self.ts_ms - keep_ms;
        if self.sent.iter().any(|s| s.0 < since) {
            self.sent.retain(|s| s.0 >= since);
        }
    }

    /// A fingerprint of what a restart must not lose: each visit's store, start and dwells
    /// fired, the notifications and the holds — all but the last position, the ping time and
    /// the visits' last-seen times (`decisions.state.DeviceState.material`, the same rule).
    pub fn material(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        for v in &self.visits {
            (v.store, v.entered_ms, &v.fired).hash(&mut h);
        }
        self.visits.len().hash(&mut h);
        self.sent.hash(&mut h);
        self.held.hash(&mut h);
        h.finish()
    }

    /// Whether the store's copy differs from this state only in its last position, ping time
    /// and visits' last-seen times, for less than `refresh_ms` of the device's ping time: a
    /// change it may hold back (`refresh_ms` 0: none).
    pub fn held_back(&self, refresh_ms: i64) -> bool {
        match self.stored.0 {
            Some((fingerprint, ts)) if refresh_ms > 0 => {
                self.ts_ms >= ts && self.ts_ms - ts < refresh_ms && fingerprint == self.material()
            }
            _ => false,
        }
    }

    /// Note that the store now holds this state as it is.
    pub fn mark_stored(&mut self) {
        self.stored = Stored(Some((self.material(), self.ts_ms)));
    }

    /// Format 2, as `DeviceState.dumps` writes it (packed above PACK_OVER bytes).
    pub fn dumps(&self, names: &Names) -> Vec<u8> {
        let t = self.ts_ms;
        let guess = 48 + 48 * (self.visits.len() + self.sent.len()) + 16 * self.held.len();
        let mut s = String::with_capacity(guess); // grown once at most (was three times at 100k fences)
        let _ = write!(s, "[{FORMAT},");
        decimal(&mut s, t);
        s.push(',');
        float(&mut s, self.lat);
        s.push(',');
        float(&mut s, self.lng);
        s.push_str(",{");
        for (i, v) in self.visits.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            names.write_json(&mut s, v.store);
            s.push_str(":[");
            decimal(&mut s, t - v.entered_ms);
            s.push(',');
            decimal(&mut s, t - v.last_in_ms);
            if !v.fired.is_empty() {
                s.push(',');
                list(&mut s, names, &v.fired);
            }
            s.push(']');
        }
        s.push_str("},[");
        for (i, &(a, c, st)) in self.sent.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            decimal(&mut s, t - a);
            s.push(',');
            names.write_json(&mut s, c);
            s.push(',');
            names.write_json(&mut s, st);
            s.push(']');
        }
        s.push_str("],");
        list(&mut s, names, &self.held);
        s.push(']');
        let raw = s.into_bytes();
        if raw.len() <= PACK_OVER {
            return raw;
        }
        let mut z = flate2::write::ZlibEncoder::new(vec![PACKED], flate2::Compression::new(6));
        z.write_all(&raw).expect("writing to memory");
        z.finish().expect("writing to memory")
    }

    /// Format 2 or 1, plain or packed, as `DeviceState.loads` reads them.
    pub fn loads(raw: &[u8], names: &mut Names) -> Result<State, String> {
        let value: Value = if raw.first() == Some(&PACKED) {
            let mut text = Vec::new();
            flate2::read::ZlibDecoder::new(&raw[1..])
                .read_to_end(&mut text)
                .map_err(|e| format!("packed state: {e}"))?;
            serde_json::from_slice(&text)
        } else {
            serde_json::from_slice(raw)
        }
        .map_err(|e| format!("not JSON: {e}"))?;
        let a = value.as_array().ok_or("not a JSON array")?;
        let v2 = a.first().and_then(Value::as_i64) == Some(FORMAT) && a.len() == 7;
        let (t, rest) = if v2 {
            (int(&a[1], "ts")?, &a[2..])
        } else if a.len() == 6 {
            (int(&a[0], "ts")?, &a[1..])
        } else {
            return Err(format!("an array of {} items is no state format", a.len()));
        };
        let at = |x: i64| if v2 { t - x } else { x };
        let mut visits = Vec::new();
        for (store, v) in rest[2].as_object().ok_or("visits is not an object")? {
            let v = v.as_array().ok_or("a visit is not an array")?;
            if v.len() < 2 {
                return Err(format!("visit {store} has {} items", v.len()));
            }
            let fired = match v.get(2) {
                Some(f) => ids(f, names, "fired")?,
                None => Vec::new(),
            };
            let store = names.id(store);
            let (entered_ms, last_in_ms) = (at(int(&v[0], "entered")?), at(int(&v[1], "last_in")?));
            visits.push(Visit {
                store,
                entered_ms,
                last_in_ms,
                fired,
            });
        }
        let mut sent = Vec::new();
        for x in rest[3].as_array().ok_or("sent is not an array")? {
            match x.as_array().map(Vec::as_slice) {
                Some([a, Value::String(c), Value::String(s)]) => {
                    sent.push((at(int(a, "sent")?), names.id(c), names.id(s)))
                }
                _ => return Err("a sent entry is not [ts, campaign, store]".into()),
            }
        }
        Ok(State {
            ts_ms: t,
            lat: opt_float(&rest[0], "lat")?,
            lng: opt_float(&rest[1], "lng")?,
            visits,
            sent,
            held: ids(&rest[4], names, "held")?,
            stored: Stored(None),
            told: Told(None),
        })
    }
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .ok_or_else(|| format!("{what} is not a number"))
}

fn opt_float(v: &Value, what: &str) -> Result<Option<f64>, String> {
    match v {
        Value::Null => Ok(None),
        _ => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{what} is not a number")),
    }
}

fn ids(v: &Value, names: &mut Names, what: &str) -> Result<Vec<u32>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what} is not an array"))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(|s| names.id(s))
                .ok_or_else(|| format!("{what} holds a non-string"))
        })
        .collect()
}

/// `v` in decimal onto `s`, as `write!` puts it but without the formatter's machinery (a
/// state at 100k fences has ~40 numbers).
fn decimal(s: &mut String, v: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = v.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

fn float(s: &mut String, v: Option<f64>) {
    match v {
        Some(f) if f.is_finite() => s.push_str(ryu::Buffer::new().format_finite(f)),
        _ => s.push_str("null"),
    }
}

fn list(s: &mut String, names: &Names, v: &[u32]) {
    s.push('[');
    for (i, &x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        names.write_json(s, x);
    }
    s.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_write_writes_them() {
        let mut edges = vec![
            0,
            1,
            -1,
            9,
            10,
            -10,
            99,
            100,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        edges.extend((0..64).map(|b| 1i64 << b).flat_map(|v| [v - 1, v, -v]));
        for v in edges {
            let mut s = String::from("x");
            decimal(&mut s, v);
            assert_eq!(s, format!("x{v}"));
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for v in [
            "s-1",
            "",
            "ストア",
            "c-\"q\"",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\u{7f}del",
            "\u{1}",
            "a-store-id-of-exactly-30-bytes",
            "a-store-id-of-more-than-30-bytes",
            "a long one, with \"quotes\" to escape, past the inline slot",
            "ストア・ストア・ストア・ストア",
        ] {
            let mut names = Names::default();
            names.id("before");
            let id = names.id(v);
            assert_eq!(names.id(v), id);
            assert_eq!(names.name(id), v);
            let mut s = String::new();
            names.write_json(&mut s, id);
            assert_eq!(s, serde_json::to_string(v).unwrap(), "{v:?}");
        }
    }

    #[test]
    fn only_position_and_times_are_held_back_and_not_for_long() {
        let mut st = State {
            ts_ms: 1_000_000,
            lat: Some(35.0),
            lng: Some(139.0),
            visits: vec![Visit {
                store: 1,
                entered_ms: 900_000,
                last_in_ms: 1_000_000,
                fired: vec![],
            }],
            ..State::default()
        };
        assert!(!st.held_back(60_000), "the store's copy unknown");
        st.mark_stored();
        st.ts_ms += 59_999;
        st.lat = Some(35.001);
        st.visits[0].last_in_ms = st.ts_ms;
        assert!(st.held_back(60_000));
        assert!(!st.held_back(0), "refresh 0: nothing held back");
        st.ts_ms += 1;
        assert!(
            !st.held_back(60_000),
            "a refresh of ping time since the copy"
        );
        st.ts_ms -= 1;
        for change in 0..4 {
            let mut other = st.clone();
            match change {
                0 => other.visits[0].fired.push(7),
                1 => other.visits.push(Visit {
                    store: 2,
                    entered_ms: st.ts_ms,
                    last_in_ms: st.ts_ms,
                    fired: vec![],
                }),
                2 => other.sent.push((st.ts_ms, 7, 1)),
                _ => other.held.push(3),
            }
            assert!(!other.held_back(60_000), "change {change} is material");
        }
        let mut left = st.clone();
        left.visits.clear();
        assert!(!left.held_back(60_000), "a visit ended");
    }

    #[test]
    fn round_trip_plain_and_packed() {
        let mut names = Names::default();
        let (a, b, c) = (names.id("s-1"), names.id("c-\"q\""), names.id("ストア"));
        let mut st = State {
            ts_ms: 1_795_000_000_000,
            lat: Some(35.0),
            lng: Some(139.700_000_01),
            visits: vec![Visit {
                store: a,
                entered_ms: 1_794_999_000_000,
                last_in_ms: 1_795_000_000_000,
                fired: vec![b],
            }],
            sent: vec![(1_794_999_500_000, b, a)],
            held: vec![c],
            stored: Stored(None),
            told: Told(None),
        };
        let raw = st.dumps(&names);
        assert_eq!(State::loads(&raw, &mut names).unwrap(), st);
        assert!(raw.starts_with(b"[2,1795000000000,35.0,139.70000001,{\"s-1\":[1000000,0,["));
        for i in 0..200 {
            let s = names.id(&format!("store-{i}"));
            st.visits.push(Visit {
                store: s,
                entered_ms: 1,
                last_in_ms: 2,
                fired: vec![],
            });
        }
        let packed = st.dumps(&names);
        assert_eq!(packed[0], PACKED);
        assert_eq!(State::loads(&packed, &mut names).unwrap(), st);
    }

    #[test]
    fn format_one_and_errors() {
        let mut names = Names::default();
        let st = State::loads(
            br#"[5,1.5,2.5,{"s":[1,4,["c"]]},[[3,"c","s"]],[]]"#,
            &mut names,
        )
        .unwrap();
        assert_eq!(
            (
                st.ts_ms,
                st.visits[0].entered_ms,
                st.visits[0].last_in_ms,
                st.sent[0].0
            ),
            (5, 1, 4, 3)
        );
        assert!(State::loads(b"[2,1]", &mut names)
            .unwrap_err()
            .contains("2 items"));
        assert!(State::loads(b"{", &mut names)
            .unwrap_err()
            .contains("not JSON"));
        let none = State::loads(b"[2,7,null,null,{},[],[]]", &mut names).unwrap();
        assert_eq!((none.lat, none.ts_ms), (None, 7));
    }
}
/// Writing states with many names in use, names in their slots vs as separate heap strings
/// (the layout before): `cargo test --release --lib -- --ignored --nocapture names_inline_timing`.
#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore]
    fn names_inline_timing() {
        let (n_names, n_states, rounds) = (200_000u32, 20_000usize, 200_000usize);
        let mut names = Names::default();
        let mut heap: Vec<String> = Vec::new(); // the old layout, allocated among other data
        let mut other: Vec<Vec<u8>> = Vec::new();
        for i in 0..n_names {
            let name = format!("syn-{i:06}");
            names.id(&name);
            heap.push(name);
            other.push(vec![0u8; 200]);
        }
        let c = names.id("autumn-latte");
        heap.push("autumn-latte".into());
        let mut x: u64 = 12345;
        let mut rand = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % u64::from(n_names)) as u32
        };
        let t0 = 1_795_489_630_294i64;
        let states: Vec<State> = (0..n_states)
            .map(|_| State {
                ts_ms: t0,
                lat: Some(35.689206),
                lng: Some(139.8573609),
                visits: (0..9)
                    .map(|i| Visit {
                        store: rand(),
                        entered_ms: t0 - 100_000 - i * 1000,
                        last_in_ms: t0,
                        fired: if i < 4 { vec![c] } else { vec![] },
                    })
                    .collect(),
                sent: vec![(t0 - 209_859, c, rand()), (t0 - 209_859, c, rand())],
                held: vec![],
                stored: Stored(None),
                told: Told(None),
            })
            .collect();
        let heap_names = |st: &State| {
            let mut s = String::with_capacity(64);
            for v in &st.visits {
                s.push('"');
                s.push_str(&heap[v.store as usize]);
                s.push('"');
                for &f in &v.fired {
                    s.push_str(&heap[f as usize]);
                }
            }
            for &(_, c, st) in &st.sent {
                s.push_str(&heap[c as usize]);
                s.push_str(&heap[st as usize]);
            }
            s.len()
        };
        let only_names = |st: &State| {
            let mut s = String::with_capacity(64);
            for v in &st.visits {
                names.write_json(&mut s, v.store);
                for &f in &v.fired {
                    names.write_json(&mut s, f);
                }
            }
            for &(_, c, st) in &st.sent {
                names.write_json(&mut s, c);
                names.write_json(&mut s, st);
            }
            s.len()
        };
        let time = |f: &dyn Fn(&State) -> usize| {
            let t = std::time::Instant::now();
            let n: usize = (0..rounds).map(|i| f(&states[(i * 7919) % n_states])).sum();
            (t.elapsed() / rounds as u32, n / rounds)
        };
        let (whole, bytes) = time(&|st| st.dumps(&names).len());
        let (slots, _) = time(&only_names);
        let (heaped, _) = time(&heap_names);
        eprintln!(
            "{n_names} names: a {bytes}-byte state written in {whole:?}; its names alone: slots {slots:?}, heap strings {heaped:?}"
        );
        drop(other);
    }
}
