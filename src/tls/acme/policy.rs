//! When to renew: `renew_before = "auto"` follows the CA's ARI window (RFC 9773) when it offers
//! one (a point inside it, the same for a given certificate), else renews with a third of the
//! lifetime left (what short-lived certificates need); a duration renews that long before
//! expiry. Pure functions of the certificate and a clock, so they are tested with fixed times.

use std::time::Duration;

use crate::config::RenewBefore;

/// A suggested renewal window, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    AriWindow,
    LifetimeThird,
    Override,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::AriWindow => "inside the CA's ARI renewal window",
            Reason::LifetimeThird => "with a third of the lifetime left",
            Reason::Override => "renew_before before expiry",
        }
    }
}

/// When to renew a certificate valid from `not_before` to `not_after` (unix seconds).
pub fn plan(not_before: i64, not_after: i64, serial: &str, policy: RenewBefore, ari: Option<Window>) -> (i64, Reason) {
    match (policy, ari) {
        (RenewBefore::Before(d), _) => (not_after - d.as_secs() as i64, Reason::Override),
        (RenewBefore::Auto, Some(w)) if w.end >= w.start => {
            // a point inside the window, spread by certificate, stable across checks
            let span = w.end - w.start;
            let frac = serial.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            }) % 1000;
            (w.start + span * frac as i64 / 1000, Reason::AriWindow)
        }
        (RenewBefore::Auto, _) => (not_after - (not_after - not_before) / 3, Reason::LifetimeThird),
    }
}

/// When rustls-acme renews on its own: with a third of the lifetime left. Our plan forces an
/// earlier renewal only when it is earlier than this.
pub fn library_renewal(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before) / 3
}

/// `Retry-After` as seconds or an HTTP date, relative to `now` (unix seconds).
pub fn retry_after(value: &str, now: i64) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_third_of_the_lifetime_left() {
        // 90-day certificate: renew at day 60; a 6-day one at day 4
        assert_eq!(
            plan(0, 90 * DAY, "01", RenewBefore::Auto, None),
            (60 * DAY, Reason::LifetimeThird)
        );
        assert_eq!(
            plan(0, 6 * DAY, "01", RenewBefore::Auto, None),
            (4 * DAY, Reason::LifetimeThird)
        );
        assert_eq!(library_renewal(0, 90 * DAY), 60 * DAY);
    }

    #[test]
    fn an_override_counts_back_from_expiry() {
        let d = RenewBefore::Before(Duration::from_secs(30 * DAY as u64));
        assert_eq!(plan(0, 90 * DAY, "01", d, None), (60 * DAY, Reason::Override));
        let w = Window { start: 0, end: DAY };
        assert_eq!(
            plan(0, 90 * DAY, "01", d, Some(w)).1,
            Reason::Override,
            "an override wins over ARI"
        );
    }

    #[test]
    fn ari_windows_are_followed_within_their_bounds() {
        let w = Window {
            start: 40 * DAY,
            end: 42 * DAY,
        };
        for serial in ["01", "02", "ab:cd", "7f"] {
            let (at, reason) = plan(0, 90 * DAY, serial, RenewBefore::Auto, Some(w));
            assert_eq!(reason, Reason::AriWindow);
            assert!((w.start..=w.end).contains(&at), "{serial}: {at}");
            assert_eq!(plan(0, 90 * DAY, serial, RenewBefore::Auto, Some(w)).0, at, "stable");
        }
        // a CA asking for renewal right now (revocation): the window is in the past
        let now_window = Window { start: 0, end: 1 };
        assert!(plan(0, 90 * DAY, "01", RenewBefore::Auto, Some(now_window)).0 <= 1);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(retry_after("21600", 0), Some(Duration::from_secs(21600)));
        let now = 1_700_000_000;
        let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(now as u64 + 120));
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("soon", now), None);
    }
}
