//! When to ask the CA for a certificate: pure decisions over the current
//! certificate's facts, the wanted domains, past failures and the clock,
//! so `watch`, `failover` and `cert renew` decide alike and tests need no
//! CA.

use std::time::{Duration, SystemTime};

use super::{CertificateFacts, Domain};

/// The wait after the first failed attempt; it doubles with each further
/// failure up to LONGEST_BACKOFF. Let's Encrypt allows 5 failed validations
/// per name and hour: these waits make at most 4 attempts in the first hour.
const FIRST_BACKOFF: Duration = Duration::from_secs(5 * 60);
const LONGEST_BACKOFF: Duration = Duration::from_secs(6 * 60 * 60);

/// Why a certificate is wanted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// There is none.
    Missing,
    /// Only the self-signed placeholder (or another self-signed one).
    SelfSigned,
    /// The certificate lacks a wanted domain.
    DomainsChanged,
    /// Two thirds of its lifetime have passed.
    Renewal,
    /// It has expired.
    Expired,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Ask the CA now.
    Now(Due),
    /// Nothing to do before then (renewal time, or the end of a backoff).
    At(SystemTime),
}

/// What failed attempts since the last success left: kept by the caller,
/// reset when a certificate is issued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub count: u32,
    pub last: Option<SystemTime>,
    /// When the CA said to come back (Retry-After on a rate limit).
    pub retry_after: Option<SystemTime>,
}

impl Failures {
    /// Adds a failure at `now`, with the CA's Retry-After if it gave one.
    pub fn record(&mut self, now: SystemTime, retry_after: Option<SystemTime>) {
        self.count = self.count.saturating_add(1);
        self.last = Some(now);
        self.retry_after = retry_after;
    }

    /// The earliest time of the next attempt: the backoff after the last
    /// failure, or the CA's Retry-After when that is later.
    pub fn next_attempt(&self) -> Option<SystemTime> {
        let backoff_end = self.last.map(|last| last + backoff(self.count));
        backoff_end.max(self.retry_after)
    }
}

/// The wait after `failures` failed attempts in a row.
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow(n - 1))
            .min(LONGEST_BACKOFF),
    }
}

/// Whether to ask the CA for a certificate for `wanted` at `now`, given the
/// one in use (`current`) and the failures since the last success.
pub fn decide(
    current: Option<&CertificateFacts>,
    wanted: &[Domain],
    failures: &Failures,
    now: SystemTime,
) -> Renewal {
    let due = match current {
        None => Due::Missing,
        Some(facts) if facts.self_signed => Due::SelfSigned,
        Some(facts) if !facts.covers(wanted) => Due::DomainsChanged,
        Some(facts) if now >= facts.not_after => Due::Expired,
        Some(facts) if now >= facts.renew_at() => Due::Renewal,
        Some(facts) => {
            return Renewal::At(facts.renew_at().max(failures.next_attempt().unwrap_or(now)));
        }
    };
    match failures.next_attempt() {
        Some(next) if next > now => Renewal::At(next),
        _ => Renewal::Now(due),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    const MINUTE: Duration = Duration::from_secs(60);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + 20_000 * DAY
    }

    fn domains(names: &[&str]) -> Vec<Domain> {
        names.iter().map(|n| Domain::parse(n).unwrap()).collect()
    }

    /// A 90-day certificate from t0 for site.test.
    fn facts() -> CertificateFacts {
        CertificateFacts {
            domains: vec!["site.test".into()],
            issuer: "CN=Test CA".into(),
            serial: "01".into(),
            not_before: t0(),
            not_after: t0() + 90 * DAY,
            self_signed: false,
        }
    }

    #[test]
    fn renews_at_two_thirds_of_the_lifetime_and_for_every_gap() {
        let wanted = domains(&["site.test"]);
        let none = Failures::default();
        let decide = |facts: Option<&CertificateFacts>, wanted: &[Domain], days: u32| {
            decide(facts, wanted, &none, t0() + days * DAY)
        };
        let current = facts();
        assert_eq!(decide(None, &wanted, 1), Renewal::Now(Due::Missing));
        assert_eq!(
            decide(Some(&current), &wanted, 1),
            Renewal::At(t0() + 60 * DAY)
        );
        assert_eq!(
            decide(Some(&current), &wanted, 59),
            Renewal::At(t0() + 60 * DAY)
        );
        assert_eq!(
            decide(Some(&current), &wanted, 60),
            Renewal::Now(Due::Renewal)
        );
        assert_eq!(
            decide(Some(&current), &wanted, 90),
            Renewal::Now(Due::Expired)
        );
        let more = domains(&["site.test", "www.site.test"]);
        assert_eq!(
            decide(Some(&current), &more, 1),
            Renewal::Now(Due::DomainsChanged)
        );
        let placeholder = CertificateFacts {
            self_signed: true,
            ..facts()
        };
        assert_eq!(
            decide(Some(&placeholder), &wanted, 1),
            Renewal::Now(Due::SelfSigned)
        );
    }

    #[test]
    fn failures_back_off_doubling_up_to_six_hours() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), 5 * MINUTE);
        assert_eq!(backoff(2), 10 * MINUTE);
        assert_eq!(backoff(4), 40 * MINUTE);
        assert_eq!(backoff(7), 320 * MINUTE);
        assert_eq!(backoff(8), 360 * MINUTE);
        assert_eq!(backoff(u32::MAX), 360 * MINUTE);
    }

    #[test]
    fn after_a_failure_the_next_attempt_waits_for_the_backoff_or_the_cas_retry_after() {
        let wanted = domains(&["site.test"]);
        let failed_at = t0() + 70 * DAY;
        let mut failures = Failures::default();
        failures.record(failed_at, None);
        failures.record(failed_at, None);
        let current = facts();
        let decide = |failures: &Failures, now| decide(Some(&current), &wanted, failures, now);
        assert_eq!(
            decide(&failures, failed_at + MINUTE),
            Renewal::At(failed_at + 10 * MINUTE)
        );
        assert_eq!(
            decide(&failures, failed_at + 10 * MINUTE),
            Renewal::Now(Due::Renewal)
        );
        // A rate limit: the CA's later time wins; an earlier one does not.
        failures.record(failed_at, Some(failed_at + 3 * DAY));
        assert_eq!(failures.count, 3);
        assert_eq!(
            decide(&failures, failed_at + DAY),
            Renewal::At(failed_at + 3 * DAY)
        );
        failures.record(failed_at, Some(failed_at + MINUTE));
        assert_eq!(
            decide(&failures, failed_at + 2 * MINUTE),
            Renewal::At(failed_at + 40 * MINUTE)
        );
        // Failures before renewal time (a forced renewal) do not make it
        // come sooner, nor do they delay it past their own backoff.
        let mut early = Failures::default();
        early.record(t0() + DAY, None);
        assert_eq!(decide(&early, t0() + DAY), Renewal::At(t0() + 60 * DAY));
    }
}
