//! When to try a failed API request again, and how long to wait first.
//!
//! Exponential backoff with full jitter, capped per wait and bounded in total,
//! honouring the API's own hint (Retry-After or RateLimit-Reset) when it gives
//! one, but never waiting past the budget, however absurd the hint. The maths
//! is pure (and saturating) so it is tested without waiting.

use std::time::Duration;

/// Shortest and longest computed wait between attempts.
const BASE_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);

/// Bounds on retrying one logical request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up once this much time has been spent waiting and trying.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1), or None
    /// when the budget does not allow another try. `hint` is the server's own
    /// wait; `random` in [0, 1) spreads concurrent clients apart.
    pub fn next_delay(
        &self,
        attempt: u32,
        elapsed: Duration,
        hint: Option<Duration>,
        random: f64,
    ) -> Option<Duration> {
        let ceiling = BASE_DELAY
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(MAX_DELAY);
        let delay = match hint {
            // The server knows best, but a little jitter keeps a crowd of cron
            // jobs from coming back in the same millisecond.
            Some(hint) => hint.saturating_add(BASE_DELAY.mul_f64(random)),
            None => BASE_DELAY.max(ceiling.mul_f64(random)),
        }
        .min(self.budget);
        let within = elapsed
            .checked_add(delay)
            .is_some_and(|end| end <= self.budget);
        within.then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_but_stay_capped() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(120),
        };
        let top = |attempt| {
            policy
                .next_delay(attempt, Duration::ZERO, None, 0.999)
                .unwrap()
        };
        assert!(top(1) <= Duration::from_millis(250));
        assert!(top(3) > Duration::from_millis(900) && top(3) <= Duration::from_secs(1));
        assert!(top(30) <= MAX_DELAY);
        let low = policy.next_delay(5, Duration::ZERO, None, 0.0).unwrap();
        assert_eq!(low, BASE_DELAY);
    }

    #[test]
    fn server_hint_wins() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(120),
        };
        let delay = policy.next_delay(1, Duration::ZERO, Some(Duration::from_secs(3)), 0.0);
        assert_eq!(delay, Some(Duration::from_secs(3)));
    }

    #[test]
    fn absurd_hints_and_counts_cannot_overflow() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(120),
        };
        assert_eq!(
            policy.next_delay(1, Duration::ZERO, Some(Duration::MAX), 0.999),
            Some(policy.budget),
            "a hint is capped at the budget"
        );
        assert_eq!(
            policy.next_delay(2, Duration::from_secs(1), Some(Duration::MAX), 0.999),
            None,
            "... and a wait past the budget ends the retries"
        );
        assert_eq!(
            policy.next_delay(u32::MAX, Duration::MAX, Some(Duration::MAX), 0.999),
            None
        );
        assert!(
            policy
                .next_delay(u32::MAX, Duration::ZERO, None, 0.999)
                .unwrap()
                <= MAX_DELAY
        );
        let endless = RetryPolicy {
            budget: Duration::MAX,
        };
        assert_eq!(
            endless.next_delay(1, Duration::from_secs(5), Some(Duration::MAX), 0.5),
            None
        );
        assert_eq!(
            endless.next_delay(1, Duration::ZERO, Some(Duration::MAX), 0.5),
            Some(Duration::MAX)
        );
    }

    #[test]
    fn budget_ends_retries() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(10),
        };
        assert!(
            policy
                .next_delay(2, Duration::from_millis(9_900), None, 0.9)
                .is_none()
        );
        assert!(
            policy
                .next_delay(2, Duration::from_secs(1), None, 0.9)
                .is_some()
        );
    }
}
