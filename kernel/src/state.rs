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
#[derive(Default)]
pub struct Names {
    ids: Vec<String>,
    of: HashMap<String, u32>,
}

impl Names {
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.of.get(name) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(name.to_owned());
        self.of.insert(name.to_owned(), i);
        i
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.of.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        &self.ids[id as usize]
    }
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

    /// Format 2, as `DeviceState.dumps` writes it (packed above PACK_OVER bytes).
    pub fn dumps(&self, names: &Names) -> Vec<u8> {
        let t = self.ts_ms;
        let mut s = String::with_capacity(64);
        let _ = write!(s, "[{FORMAT},{t},");
        float(&mut s, self.lat);
        s.push(',');
        float(&mut s, self.lng);
        s.push_str(",{");
        for (i, v) in self.visits.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            string(&mut s, names.name(v.store));
            let _ = write!(s, ":[{},{}", t - v.entered_ms, t - v.last_in_ms);
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
            let _ = write!(s, "[{},", t - a);
            string(&mut s, names.name(c));
            s.push(',');
            string(&mut s, names.name(st));
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

fn float(s: &mut String, v: Option<f64>) {
    match v {
        Some(f) if f.is_finite() => s.push_str(ryu::Buffer::new().format_finite(f)),
        _ => s.push_str("null"),
    }
}

/// `v` as a JSON string, the bytes serde_json writes; ids needing no escape (all of them, in
/// practice) are copied as they are instead of through a fresh allocation each.
fn string(s: &mut String, v: &str) {
    if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        s.push('"');
        s.push_str(v);
        s.push('"');
    } else {
        s.push_str(&serde_json::to_string(v).expect("a str serialises"));
    }
}

fn list(s: &mut String, names: &Names, v: &[u32]) {
    s.push('[');
    for (i, &x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        string(s, names.name(x));
    }
    s.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            let mut s = String::new();
            string(&mut s, v);
            assert_eq!(s, serde_json::to_string(v).unwrap(), "{v:?}");
        }
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
