//! The usual ping's fast path: `decisions.pings._fast_ping` over `orjson.loads`, natively.
//!
//! Accepts only what that path accepts, with the same values: a JSON object of exactly the
//! ping's fields (no unknown ones: an unknown field's value could be something orjson
//! refuses), a string device id of 1 to 128 characters equal to the record key, `ts` as
//! epoch-ms integer or an RFC 3339 string of the common shape, `lat`/`lng` as JSON floats in
//! range, `accuracy_m`/`speed_mps` absent, null or non-negative floats. Anything else is
//! `None` and goes down Python's detailed path, which accepts it or says why not.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

pub const MAX_PING_BYTES: usize = 8192;
pub const MIN_EPOCH_MS: i64 = 946_684_800_000;
pub const MAX_EPOCH_MS: i64 = 4_102_444_800_000;
const CONTROL_FIELD: &[u8] = br#""control":"presence_check""#;

#[derive(Debug, PartialEq)]
pub struct Fast<'a> {
    pub device: Cow<'a, str>,
    pub ts_ms: i64,
    pub lat: f64,
    pub lng: f64,
    pub acc: Option<f64>,
    pub speed: Option<f64>,
}

/// The ping if `raw` is a usual, valid one (see the module doc); None: ask Python.
pub fn fast<'a>(raw: &'a [u8], key: Option<&[u8]>) -> Option<Fast<'a>> {
    if raw.len() > MAX_PING_BYTES || contains(&raw[..raw.len().min(40)], CONTROL_FIELD) {
        return None;
    }
    let f: Fields = serde_json::from_slice(raw).ok()?;
    let (device, ts, lat, lng) = (f.device?, f.ts?, f.lat?, f.lng?);
    let chars = device.chars().count();
    if !(1..=128).contains(&chars) || key.is_some_and(|k| k != device.as_bytes()) {
        return None;
    }
    let ts_ms = match ts {
        Ts::Int(ms) => ms,
        Ts::Text(s) => rfc3339_ms(&s)?,
    };
    if !(MIN_EPOCH_MS..=MAX_EPOCH_MS).contains(&ts_ms) {
        return None;
    }
    if !((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng)) {
        return None;
    }
    let (acc, speed) = (f.acc.flatten(), f.speed.flatten());
    if acc.is_some_and(|a| a < 0.0) || speed.is_some_and(|s| s < 0.0) {
        return None;
    }
    Some(Fast {
        device,
        ts_ms,
        lat,
        lng,
        acc,
        speed,
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Epoch ms of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)`, computed as Python does
/// (`int(datetime.fromisoformat(v).timestamp() * 1000)`); None for any other shape.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |i: usize, n: usize| -> Option<i64> {
        let part = b.get(i..i + n)?;
        part.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if y < 1
        || !(1..=12).contains(&mo)
        || d < 1
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return None;
        }
        micros = num(i + 1, digits)? * 10i64.pow(6 - digits as u32);
        i += 1 + digits;
    }
    let offset_s = match &b[i..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    let us = secs * 1_000_000 + micros;
    Some(((us as f64 / 1e6) * 1000.0) as i64)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

enum Ts<'a> {
    Int(i64),
    Text(Cow<'a, str>),
}

#[derive(Default)]
struct Fields<'a> {
    device: Option<Cow<'a, str>>,
    ts: Option<Ts<'a>>,
    lat: Option<f64>,
    lng: Option<f64>,
    acc: Option<Option<f64>>,
    speed: Option<Option<f64>>,
}

/// A JSON string, borrowed from the input where it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON number written as a float (orjson's `float`); an integer is refused.
struct Float(f64);

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Float;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a float")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Float, E> {
                Ok(Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ts`: an integer, or a string.
struct TsValue<'a>(Ts<'a>);

impl<'de> Deserialize<'de> for TsValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TsValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TsValue<'de>, E> {
                i64::try_from(v)
                    .map(|v| TsValue(Ts::Int(v)))
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TsValue<'de>, E> {
                Ok(TsValue(Ts::Int(v)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<TsValue<'de>, E> {
                Ok(TsValue(Ts::Text(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TsValue<'de>, E> {
                Ok(TsValue(Ts::Text(Cow::Owned(v.to_owned()))))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a ping object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut f = Fields::default();
                let dup = || de::Error::custom("a field twice");
                while let Some(Text(key)) = map.next_key::<Text>()? {
                    match key.as_ref() {
                        "device_id" if f.device.is_none() => {
                            f.device = Some(map.next_value::<Text>()?.0)
                        }
                        "ts" if f.ts.is_none() => f.ts = Some(map.next_value::<TsValue>()?.0),
                        "lat" if f.lat.is_none() => f.lat = Some(map.next_value::<Float>()?.0),
                        "lng" if f.lng.is_none() => f.lng = Some(map.next_value::<Float>()?.0),
                        "accuracy_m" if f.acc.is_none() => {
                            f.acc = Some(map.next_value::<Option<Float>>()?.map(|x| x.0))
                        }
                        "speed_mps" if f.speed.is_none() => {
                            f.speed = Some(map.next_value::<Option<Float>>()?.map(|x| x.0))
                        }
                        "device_id" | "ts" | "lat" | "lng" | "accuracy_m" | "speed_mps" => {
                            return Err(dup())
                        }
                        _ => return Err(de::Error::custom("an unknown field")),
                    }
                }
                Ok(f)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_ping() {
        let raw = br#"{"device_id":"sim-1","ts":1795489201836,"lat":35.6436791,"lng":139.7192826,"accuracy_m":19.9}"#;
        let p = fast(raw, Some(b"sim-1")).unwrap();
        assert_eq!(
            (p.ts_ms, p.lat, p.acc, p.speed),
            (1_795_489_201_836, 35.643_679_1, Some(19.9), None)
        );
        assert!(fast(raw, Some(b"other")).is_none());
        let text = br#"{"device_id":"d","ts":"2026-11-23T10:00:00.5+09:00","lat":35.0,"lng":139.0,"speed_mps":null}"#;
        assert_eq!(fast(text, None).unwrap().ts_ms, 1_795_395_600_500);
    }

    #[test]
    fn anything_unusual_asks_python() {
        for raw in [
            &br#"{"device_id":"d","ts":1795489201836,"lat":35,"lng":139.0}"#[..], // an integer
            br#"{"device_id":"d","ts":1795489201836,"lat":35.0,"lng":139.0,"x":1}"#, // unknown field
            br#"{"device_id":"d","ts":1795489201836,"lat":35.0,"lat":36.0,"lng":139.0}"#, // twice
            br#"{"device_id":"d","ts":1795489201.5,"lat":35.0,"lng":139.0}"#,        // float ts
            br#"{"device_id":"d","ts":"2026-11-23T10:00:00","lat":35.0,"lng":139.0}"#, // no offset
            br#"{"device_id":"d","ts":1795489201836,"lat":95.0,"lng":139.0}"#,
            br#"{"device_id":"","ts":1795489201836,"lat":35.0,"lng":139.0}"#,
            br#"{"device_id":"d","ts":1795489201836,"lat":35.0,"lng":139.0,"accuracy_m":-1.0}"#,
            br#"{"control":"presence_check","device_id":"d","ts":1}"#,
            b"[1]",
            b"{",
        ] {
            assert!(
                fast(raw, None).is_none(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2000-02-29T23:59:59.999999-01:30"),
            Some(951_874_199_999)
        );
        assert_eq!(rfc3339_ms("2001-02-29T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("2026-11-23 10:00:00Z"), None);
        assert_eq!(rfc3339_ms("2026-11-23T10:00:00.1234567Z"), None);
    }
}
