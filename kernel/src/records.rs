//! Suppressed decisions written as their records' bytes, where the presence book decides them.
//!
//! At 100k fences the engine makes ~0.4 decisions a ping, nearly all suppressions; made into
//! Python rows and serialised one by one they cost ~3 µs each. Written here, they reach Python
//! as one buffer of record values (the bytes `decisions.decision_row.DecisionRow.dumps`
//! writes, orjson's: tested to the byte), their keys, and what the metrics need.

use std::collections::HashSet;

use crate::presence::{Event, DWELL, ENTER, EXIT};
use crate::state::{plain, Names};

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as `\b \f \n \r
/// \t` or `\u00XX` (lower-case hex), everything else (non-ASCII, `/`, DEL) as it is.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    if plain(s) {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let b = c as u32 as usize;
                    out.push_str("\\u00");
                    out.push(HEX[b >> 4] as char);
                    out.push(HEX[b & 15] as char);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

fn two(out: &mut String, v: i64) {
    out.push((b'0' + (v / 10) as u8) as char);
    out.push((b'0' + (v % 10) as u8) as char);
}

/// Epoch milliseconds as the records write a UTC time (`decisions.decision_row.iso_utc`):
/// `2026-11-15T10:00:00.250000Z`, no fraction on a whole second; days to civil date by
/// Hinnant's algorithm, as there.
pub fn iso_utc(out: &mut String, ts_ms: i64) {
    let secs = ts_ms.div_euclid(1000);
    let ms = ts_ms.rem_euclid(1000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if (0..10_000).contains(&year) {
        two(out, year / 100);
        two(out, year % 100);
    } else {
        // Python's f"{year:04d}": four characters at least, the sign among them
        let digits = year.unsigned_abs().to_string();
        let width = if year < 0 { 3 } else { 4 };
        if year < 0 {
            out.push('-');
        }
        for _ in digits.len()..width {
            out.push('0');
        }
        out.push_str(&digits);
    }
    out.push('-');
    two(out, month);
    out.push('-');
    two(out, day);
    out.push('T');
    two(out, rem / 3600);
    out.push(':');
    two(out, rem / 60 % 60);
    out.push(':');
    two(out, rem % 60);
    if ms != 0 {
        out.push('.');
        out.push((b'0' + (ms / 100) as u8) as char);
        two(out, ms % 100);
        out.push_str("000");
    }
    out.push('Z');
}

/// A trigger's name in the records (`presence::EXIT`...).
pub fn transition(kind: u8) -> &'static str {
    match kind {
        EXIT => "exit",
        ENTER => "enter",
        DWELL => "dwell",
        _ => unreachable!("no trigger {kind}"),
    }
}

/// A batch's suppressed decisions: each one's record value (in `values`, ending at its
/// `ends`), its key (the device id) and the event it was written from, in decision order.
#[derive(Default)]
pub struct Written {
    pub values: String,
    pub ends: Vec<usize>,
    pub events: Vec<Event>,
}

impl Written {
    /// Write the record of a suppressed campaign decision (`e.reason` is its reason) of
    /// device `device` at `ts_ms`; `version`: the catalog version, already a JSON string.
    pub fn add(&mut self, names: &Names, e: Event, device: &str, ts_ms: i64, version: &str) {
        let reason = e.reason.expect("a suppression has a reason");
        let out = &mut self.values;
        out.push_str("{\"v\":1,\"device_id\":");
        json_str(out, device);
        out.push_str(",\"ts\":\"");
        iso_utc(out, ts_ms);
        out.push_str("\",\"store_id\":");
        names.write_json(out, e.store);
        out.push_str(",\"campaign_id\":");
        names.write_json(out, e.campaign);
        out.push_str(",\"transition\":\"");
        out.push_str(transition(e.kind));
        out.push_str("\",\"outcome\":\"suppressed\",\"reason\":");
        names.write_json(out, reason);
        out.push_str(",\"catalog_version\":");
        out.push_str(version);
        out.push('}');
        self.ends.push(out.len());
        self.events.push(e);
    }

    /// Record `i`'s value.
    pub fn value(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.values[start..self.ends[i]]
    }

    /// Reasons and how many decisions each, in the order they first appear.
    pub fn labels(&self) -> Vec<(u32, usize)> {
        let mut out: Vec<(u32, usize)> = Vec::new();
        for e in &self.events {
            let r = e.reason.expect("a suppression has a reason");
            match out.iter_mut().find(|(x, _)| *x == r) {
                Some((_, n)) => *n += 1,
                None => out.push((r, 1)),
            }
        }
        out
    }

    /// Distinct transitions (device, time, store, trigger) by trigger, as `[exit, enter, dwell]`:
    /// a transition with several campaigns is one. `at(ping)`: the ping's (device, time).
    pub fn transitions<'a>(&self, at: impl Fn(usize) -> (&'a str, i64)) -> [usize; 3] {
        let mut seen = HashSet::with_capacity(self.events.len());
        let mut out = [0; 3];
        for e in &self.events {
            let (device, ts) = at(e.ping);
            if seen.insert((device, ts, e.store, e.kind)) {
                out[(e.kind - EXIT) as usize] += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(ts: i64) -> String {
        let mut s = String::new();
        iso_utc(&mut s, ts);
        s
    }

    #[test]
    fn times_are_written_as_the_records_write_them() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_763_200_800_250), "2025-11-15T10:00:00.250000Z");
        assert_eq!(iso(1_795_489_200_007), "2026-11-24T03:00:00.007000Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z"); // a leap day of a 400-year
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999000Z");
        assert_eq!(iso(253_402_300_799_999), "9999-12-31T23:59:59.999000Z");
        assert_eq!(iso(-62_135_596_800_000), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn strings_are_escaped_as_orjson_escapes_them() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\t\u{1}\u{1f}/é\u{7f}");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f/é\u{7f}\"");
    }
}
