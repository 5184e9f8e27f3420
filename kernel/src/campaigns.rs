//! A campaign's answer to one transition, decided where the device's state is held: consent,
//! schedule, caps and token, in the order of `Engine._campaign` (the first that says no is
//! the reason). Most transitions of a dense catalog end here as a suppression (a dwell in the
//! tenth café of the day: `campaign_cap`), so Python only renders the notifications.
//!
//! What the book cannot know it asks ([`Ask`]): a device's record (consent, token) and a
//! campaign's schedule at a store's local time. Schedule answers are kept per schedule group
//! (campaign, store hours, zone) and minute, as `Engine._blocked_at` keeps them.

use std::collections::HashMap;
use std::sync::Mutex;

/// A device as the campaigns see it (`Ask::device`).
pub const NO_DEVICE: u8 = 0;
pub const OPTED_OUT: u8 = 1;
pub const REACHABLE: u8 = 2; // opted in, with a token
pub const NO_TOKEN: u8 = 3; // opted in, no token yet

const MINUTE_MS: i64 = 60_000;
const SCHEDULES_KEPT: usize = 100_000; // as decisions.engine.SCHEDULES_KEPT

/// A campaign's name and effective caps as millisecond windows (`decisions.caps.CapsMs`;
/// a window of -1: no such cap).
#[derive(Clone, Copy, Debug, Default)]
pub struct Caps {
    pub name: u32,
    pub cooldown_ms: i64,
    pub campaign_ms: i64,
    pub campaign_max: i64,
    pub device_ms: i64,
    pub device_max: i64,
}

/// A campaign due at a store on some transition: the campaign (index into the catalog's
/// campaigns), its schedule group and, for a dwell campaign, the dwell in ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Due {
    pub campaign: u32,
    pub group: u32,
    pub dwell_ms: f64,
}

/// The reasons the book says by itself, as name numbers (`state::Names`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reasons {
    pub no_device: u32,
    pub opted_out: u32,
    pub no_token: u32,
    pub cooldown: u32,
    pub campaign_cap: u32,
    pub device_cap: u32,
    /// `gate[code]`: why an enter was kept back (code 0: an uncertain position)
    pub gate: [u32; 7],
}

/// What the book asks its caller while deciding campaigns.
pub trait Ask {
    type Error;
    /// NO_DEVICE, OPTED_OUT, REACHABLE or NO_TOKEN.
    fn device(&mut self, device: &str) -> Result<u8, Self::Error>;
    /// Why campaign `campaign` may not send at store `store` at `ts` (a name number; None:
    /// it may), and whether that answer holds for the whole minute (a zone offset in whole
    /// minutes).
    fn schedule(
        &mut self,
        campaign: u32,
        store: u32,
        ts: i64,
    ) -> Result<(Option<u32>, bool), Self::Error>;
}

/// Schedule answers by (group, minute), shared by a catalog's books.
#[derive(Default)]
pub struct Schedules(Mutex<HashMap<(u32, i64), Option<u32>>>);

impl Schedules {
    /// The answer for `due`'s campaign at `store` and `ts`, asked only once per group and minute.
    pub fn blocked<A: Ask>(
        &self,
        ask: &mut A,
        due: &Due,
        campaign: u32,
        store: u32,
        ts: i64,
    ) -> Result<Option<u32>, A::Error> {
        let key = (due.group, ts.div_euclid(MINUTE_MS));
        if let Some(&known) = self.lock().get(&key) {
            return Ok(known);
        }
        let (reason, whole_minute) = ask.schedule(campaign, store, ts)?;
        if whole_minute {
            let mut kept = self.lock();
            if kept.len() >= SCHEDULES_KEPT {
                kept.clear(); // minutes long past: start over rather than grow
            }
            kept.insert(key, reason);
        }
        Ok(reason)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, i64), Option<u32>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `decisions.caps.blocked_by_caps_ms`: the first cap `sent` [(ts, campaign, store)] breaks
/// for a notification of `caps` at `store` at `now` (cooldown, campaign cap, device cap).
pub fn blocked_by_caps(
    caps: &Caps,
    sent: &[(i64, u32, u32)],
    store: u32,
    now: i64,
    r: &Reasons,
) -> Option<u32> {
    if sent.is_empty() {
        return None;
    }
    let (mut by_campaign, mut by_device, mut cooled) = (0i64, 0i64, false);
    for &(ts, c, s) in sent {
        cooled |= caps.cooldown_ms >= 0 && ts > now - caps.cooldown_ms && s == store;
        by_campaign +=
            i64::from(caps.campaign_ms >= 0 && ts > now - caps.campaign_ms && c == caps.name);
        by_device += i64::from(caps.device_ms >= 0 && ts > now - caps.device_ms);
    }
    if cooled {
        Some(r.cooldown)
    } else if caps.campaign_ms >= 0 && by_campaign >= caps.campaign_max {
        Some(r.campaign_cap)
    } else if caps.device_ms >= 0 && by_device >= caps.device_max {
        Some(r.device_cap)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Reasons = Reasons {
        no_device: 1,
        opted_out: 2,
        no_token: 3,
        cooldown: 4,
        campaign_cap: 5,
        device_cap: 6,
        gate: [0; 7],
    };
    const HOUR: i64 = 3_600_000;

    fn caps(cooldown: i64, campaign: (i64, i64), device: (i64, i64)) -> Caps {
        Caps {
            name: 100,
            cooldown_ms: cooldown,
            campaign_ms: campaign.0,
            campaign_max: campaign.1,
            device_ms: device.0,
            device_max: device.1,
        }
    }

    #[test]
    fn caps_in_order_within_their_windows() {
        let now = 100 * HOUR;
        let sent = [
            (now - 2 * HOUR, 100, 7),
            (now - 30 * HOUR, 100, 8),
            (now - HOUR, 101, 9),
        ];
        let all = caps(24 * HOUR, (48 * HOUR, 2), (24 * HOUR, 2));
        assert_eq!(blocked_by_caps(&all, &sent, 7, now, &R), Some(R.cooldown));
        assert_eq!(
            blocked_by_caps(&all, &sent, 8, now, &R),
            Some(R.campaign_cap)
        ); // 30 h ago: cooled
        let wide = caps(24 * HOUR, (12 * HOUR, 2), (24 * HOUR, 2));
        assert_eq!(
            blocked_by_caps(&wide, &sent, 8, now, &R),
            Some(R.device_cap)
        );
        let none = caps(-1, (-1, 0), (-1, 0));
        assert_eq!(blocked_by_caps(&none, &sent, 7, now, &R), None);
        // a window's edge: exactly `window` ago no longer counts (Python's `ts > now - window`)
        assert_eq!(
            blocked_by_caps(&caps(2 * HOUR, (-1, 0), (-1, 0)), &sent, 7, now, &R),
            None
        );
        assert_eq!(blocked_by_caps(&all, &[], 7, now, &R), None);
    }

    struct Counting {
        asked: usize,
        whole: bool,
    }

    impl Ask for Counting {
        type Error = ();
        fn device(&mut self, _: &str) -> Result<u8, ()> {
            Ok(REACHABLE)
        }
        fn schedule(&mut self, _: u32, _: u32, ts: i64) -> Result<(Option<u32>, bool), ()> {
            self.asked += 1;
            Ok((
                (ts.div_euclid(MINUTE_MS).rem_euclid(2) == 1).then_some(9),
                self.whole,
            ))
        }
    }

    #[test]
    fn schedules_are_asked_once_per_group_and_minute() {
        let kept = Schedules::default();
        let mut ask = Counting {
            asked: 0,
            whole: true,
        };
        let due = |group| Due {
            campaign: 0,
            group,
            dwell_ms: 0.0,
        };
        for ts in [0, 59_999, 60_000, 119_999, 120_000, -1] {
            let got = kept.blocked(&mut ask, &due(1), 0, 0, ts).unwrap();
            assert_eq!(
                got,
                (ts.div_euclid(MINUTE_MS).rem_euclid(2) == 1).then_some(9),
                "{ts}"
            );
        }
        assert_eq!(ask.asked, 4); // minutes -1, 0, 1, 2
        kept.blocked(&mut ask, &due(2), 0, 0, 0).unwrap();
        assert_eq!(ask.asked, 5); // another group
        let mut odd = Counting {
            asked: 0,
            whole: false,
        }; // a zone off by seconds: never kept
        let fresh = Schedules::default();
        fresh.blocked(&mut odd, &due(1), 0, 0, 0).unwrap();
        fresh.blocked(&mut odd, &due(1), 0, 0, 0).unwrap();
        assert_eq!(odd.asked, 2);
    }
}
