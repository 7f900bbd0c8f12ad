//! Injected failures: the random errors and dropped connections a real API
//! and network produce, and the exact ones a test schedules (a lost create
//! response, failing deletes), so that clients' retry paths get exercised.

use serde::{Deserialize, Serialize};

/// Faults applied to /v2 requests (never to /metadata or /_sim).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction of /v2 requests answered with an error instead: half 429
    /// (with rate limit headers and Retry-After: 1), half 500.
    pub error_rate: f64,
    /// Fraction of /v2 requests whose connection is closed without a byte of
    /// response.
    pub drop_rate: f64,
    /// The next N successful POST /v2/droplets create their droplets, then
    /// close the connection without responding (a lost response).
    pub drop_create_responses: u32,
    /// The next N authorized DELETE /v2/droplets/{id} answer 500 without
    /// deleting.
    pub fail_deletes: u32,
    /// The next N droplets created never leave status `new` (a stuck boot).
    pub stuck_creates: u32,
}

/// What a random roll injects into one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    Drop,
    RateLimit,
    ServerError,
}

impl Injected {
    /// Its name in the request log.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Injected::Drop => "drop",
            Injected::RateLimit => "rate_limit",
            Injected::ServerError => "server_error",
        }
    }
}

impl Faults {
    /// Rolls the dice for one request.
    pub(crate) fn roll(&self) -> Option<Injected> {
        let roll = fastrand::f64();
        if roll < self.drop_rate {
            Some(Injected::Drop)
        } else if roll < self.drop_rate + self.error_rate {
            Some(if fastrand::bool() {
                Injected::RateLimit
            } else {
                Injected::ServerError
            })
        } else {
            None
        }
    }
}

/// Uses up one of a scheduled fault's remaining count, if any is left.
pub(crate) fn take(remaining: &mut u32) -> bool {
    let left = *remaining > 0;
    *remaining = remaining.saturating_sub(1);
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_split_requests() {
        let faults = Faults {
            error_rate: 0.5,
            drop_rate: 0.25,
            ..Faults::default()
        };
        let rolls: Vec<_> = (0..4000).map(|_| faults.roll()).collect();
        let count = |what| rolls.iter().filter(|r| **r == what).count();
        assert!((800..1200).contains(&count(Some(Injected::Drop))));
        assert!((800..1200).contains(&count(Some(Injected::RateLimit))));
        assert!((800..1200).contains(&count(Some(Injected::ServerError))));
        assert_eq!(Faults::default().roll(), None);
    }

    #[test]
    fn take_counts_down_to_zero() {
        let mut remaining = 2;
        assert!(take(&mut remaining));
        assert!(take(&mut remaining));
        assert!(!take(&mut remaining));
        assert_eq!(remaining, 0);
    }
}
