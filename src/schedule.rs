//! When to renew, and how long to wait after a failure.
//!
//! The maths is pure and clamped, in the spirit of linkerd2-proxy's
//! `refresh_in`: renewal times come from the certificate actually issued (its
//! notBefore and notAfter), never from the duration that was asked for, so a CA
//! that shortens lifetimes is handled without configuration.

use std::fmt;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};

/// Renewals are spread over this share of the lifetime (earlier, never later),
/// so that replicas started together do not all hit the CA at the same moment.
pub const JITTER_FRACTION: f64 = 0.05;
/// First retry after a failed renewal.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Retries back off to at most this: a dead CA is asked about once every few
/// minutes, not hammered, and recovery is noticed soon enough.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// How far before expiry a certificate is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewPolicy {
    /// A fixed time before notAfter.
    Before(Duration),
    /// This share (in percent) of the issued lifetime before notAfter.
    Percentage(u8),
}

impl fmt::Display for RenewPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewPolicy::Before(d) => write!(
                f,
                "renewed {} before expiry",
                humantime::format_duration(*d)
            ),
            RenewPolicy::Percentage(p) => write!(f, "renewed when {p}% of its lifetime is left"),
        }
    }
}

/// When a certificate valid from `not_before` to `not_after` should be renewed.
///
/// `jitter` in `[0, 1)` moves the time earlier by up to [`JITTER_FRACTION`] of
/// the lifetime. The result never precedes `not_before` and never reaches
/// `not_after`; a fixed `renewBefore` longer than the issued lifetime (a CA
/// that issued less than was asked) falls back to renewing at half-life.
pub fn renewal_time(
    not_before: SystemTime,
    not_after: SystemTime,
    policy: RenewPolicy,
    jitter: f64,
) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let before = match policy {
        RenewPolicy::Before(d) if d < lifetime => d,
        RenewPolicy::Before(_) => lifetime / 2,
        RenewPolicy::Percentage(p) => lifetime.mul_f64(f64::from(p.min(99)) / 100.0),
    };
    let jitter = lifetime.mul_f64(JITTER_FRACTION * jitter.clamp(0.0, 1.0));
    let from_start = lifetime.saturating_sub(before).saturating_sub(jitter);
    not_before + from_start
}

/// The jitter of a certificate, in `[0, 1)`, from its serial number: as
/// random across replicas as the serials themselves, yet the same every
/// time it is computed, so that a restart keeps the renewal time and
/// `pillion status` shows the one the running agent uses (FNV-1a, then
/// MurmurHash3's finalizer so that the high bits depend on every byte).
pub fn jitter_for(serial: &str) -> f64 {
    let mut hash = serial.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    // The top 53 bits, as f64 holds them exactly.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The backoff of one thing that can fail (a credential's renewal, a Vault
/// login, keeping a token alive, accepting admin connections): after each
/// failure a longer wait, exponential from a minimum ([`RETRY_MIN`] unless
/// made with [`Backoff::between`]) and capped at a maximum ([`RETRY_MAX`]),
/// each stretched by a random 0-100% so that failed replicas spread out; a
/// success starts it over. It never gives up.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The delays still to come; `None` while nothing has failed.
    delays: Option<backon::ExponentialBackoff>,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::between(RETRY_MIN, RETRY_MAX)
    }
}

impl Backoff {
    /// A backoff with no failure yet, from [`RETRY_MIN`] to [`RETRY_MAX`]:
    /// for anything that asks a server.
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// A backoff with no failure yet whose first wait is `min` and whose
    /// waits stop growing at `max`.
    pub fn between(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            delays: None,
        }
    }

    /// Counts a failure: how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let (min, max) = (self.min, self.max);
        self.delays
            .get_or_insert_with(|| {
                ExponentialBuilder::default()
                    .with_min_delay(min)
                    .with_max_delay(max)
                    .with_factor(2.0)
                    .with_jitter()
                    .without_max_times()
                    .build()
            })
            .next()
            .unwrap_or(max)
    }

    /// Counts a success: the next failure waits the minimum again.
    pub fn succeeded(&mut self) {
        self.delays = None;
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.delays.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn default_percentage_renews_at_two_thirds_of_the_lifetime() {
        let t = renewal_time(at(0), at(300), RenewPolicy::Percentage(33), 0.0);
        assert_eq!(t, at(201));
    }

    #[test]
    fn jitter_only_moves_renewal_earlier_and_by_at_most_five_percent() {
        let late = renewal_time(at(0), at(1000), RenewPolicy::Percentage(33), 0.0);
        let early = renewal_time(at(0), at(1000), RenewPolicy::Percentage(33), 0.999_999);
        assert!(early < late);
        assert!(late.duration_since(early).unwrap() <= Duration::from_secs(50));
    }

    #[test]
    fn a_serial_always_gets_the_same_jitter_and_serials_spread() {
        assert_eq!(jitter_for("0a:1b"), jitter_for("0a:1b"));
        let j: Vec<f64> = (0..1000).map(|i| jitter_for(&format!("{i:x}"))).collect();
        assert!(j.iter().all(|x| (0.0..1.0).contains(x)));
        let low = j.iter().filter(|x| **x < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below one half");
    }

    #[test]
    fn fixed_renew_before_counts_back_from_not_after() {
        let t = renewal_time(at(0), at(24 * 3600), RenewPolicy::Before(8 * HOUR), 0.0);
        assert_eq!(t, at(16 * 3600));
    }

    #[test]
    fn renew_before_longer_than_the_issued_lifetime_renews_at_half_life() {
        // The CA issued 1h although 24h was asked for and renewBefore is 8h.
        let t = renewal_time(at(0), at(3600), RenewPolicy::Before(8 * HOUR), 0.0);
        assert_eq!(t, at(1800));
    }

    #[test]
    fn a_certificate_with_no_lifetime_is_renewed_at_once() {
        assert_eq!(
            renewal_time(at(10), at(10), RenewPolicy::Percentage(33), 0.5),
            at(10)
        );
        assert_eq!(
            renewal_time(at(20), at(10), RenewPolicy::Before(HOUR), 0.5),
            at(20)
        );
    }

    #[test]
    fn retries_back_off_and_stay_capped() {
        let mut backoff = Backoff::new();
        assert!(!backoff.is_failing());
        let delays: Vec<_> = (0..30).map(|_| backoff.failed()).collect();
        assert!(backoff.is_failing());
        assert_eq!(delays.len(), 30, "retries never stop");
        assert!(delays.iter().all(|d| *d <= RETRY_MAX * 2), "{delays:?}");
        assert!(delays[10] >= RETRY_MIN * 64, "{delays:?}");
        backoff.succeeded();
        assert!(!backoff.is_failing());
        assert!(
            backoff.failed() <= RETRY_MIN * 2,
            "a success starts it over"
        );
    }
}
