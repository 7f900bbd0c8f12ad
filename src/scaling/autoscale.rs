//! The autoscale decision, as DigitalOcean's Droplet Autoscale Pools make it,
//! on what users feel (HAProxy sessions, request rate, queueing) as well as
//! on CPU:
//!
//! desired = clamp(ceil(n × current / target), min, max), the largest over
//! all metrics, where n is the number of serving droplets. Desired is
//! compared with the whole pool, droplets still booting included, so a
//! decision taken while earlier additions boot does not add them again.
//! Scale out at once; scale in only after the cooldown, at most one step at
//! a time, and never on missing or stale data.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::schedule::{self, Window};
use crate::text::Printable;

/// What a metric measures, per serving droplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// HAProxy current sessions per server.
    SessionsPerServer,
    /// HAProxy sessions per second per server.
    RequestRatePerServer,
    /// Requests waiting in HAProxy's queues, per server.
    QueuedPerServer,
    /// Droplet CPU utilization in percent, from DigitalOcean Monitoring.
    CpuPercent,
    /// HAProxy's average response time of the servers that serve traffic,
    /// in milliseconds (`rtime`: over each server's last 1,024 requests).
    /// Taken as growing with the load per droplet, like the others.
    ResponseTimeMs,
}

/// The autoscale policy from doproxy.yml, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min: usize,
    pub max: usize,
    /// The value per droplet each metric should stay at.
    pub targets: Vec<(Metric, f64)>,
    pub cooldown: Duration,
    pub scale_in_step: usize,
    pub interval: Duration,
    /// Windows that set min and max while open (`schedule`).
    pub schedule: Vec<Window>,
}

impl Policy {
    /// The policy at `now`: with the min and max of the schedule window
    /// open then, if one is, and that window.
    pub fn scheduled(&self, now: SystemTime) -> (Policy, Option<&Window>) {
        match schedule::active(&self.schedule, now) {
            None => (self.clone(), None),
            Some(window) => (
                Policy {
                    min: window.min,
                    max: window.max,
                    ..self.clone()
                },
                Some(window),
            ),
        }
    }
}

/// One metric's current value (averaged per serving droplet), or why there
/// is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub metric: Metric,
    pub target: f64,
    /// None when the metric could not be read or is stale.
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Printable>,
}

/// What to do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ScaleOut,
    ScaleIn,
    Hold,
}

impl Action {
    /// As records and metrics name it: `scale_out`, `scale_in`, `hold`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::ScaleOut => "scale_out",
            Action::ScaleIn => "scale_in",
            Action::Hold => "hold",
        }
    }
}

/// The pool a decision starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Every droplet not being destroyed, booting and unready ones included.
    pub total: usize,
    /// Those of them that serve traffic (the metrics are per serving one).
    pub serving: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The pool's size, droplets not serving yet included.
    pub current: usize,
    /// How many of them serve (absent from records of older versions).
    #[serde(default)]
    pub serving: usize,
    /// What the metrics ask for, within min and max.
    pub desired: usize,
    /// Where this decision takes the pool (scale-in is limited by the step).
    pub target: usize,
    pub action: Action,
    /// Kept in the history, in the store: read back as `Printable`.
    pub reason: Printable,
}

/// Decides from `readings` for `pool`, given when the pool was last scaled.
pub fn decide(
    policy: &Policy,
    pool: PoolSize,
    readings: &[Reading],
    last_scaled: Option<SystemTime>,
    now: SystemTime,
) -> Decision {
    let current = pool.total;
    let wanted: Vec<usize> = readings
        .iter()
        .filter_map(|r| Some(desired_for(pool.serving, r.value?, r.target)))
        .collect();
    let missing: Vec<&Reading> = readings.iter().filter(|r| r.value.is_none()).collect();
    let raw = wanted.iter().copied().max();
    let desired = raw.unwrap_or(current).clamp(policy.min, policy.max);
    let decision = |target: usize, action: Action, reason: String| Decision {
        current,
        serving: pool.serving,
        desired,
        target,
        action,
        reason: reason.into(),
    };
    if desired > current {
        let why = match raw {
            Some(raw) if raw >= desired => "the metrics ask for more".to_string(),
            _ => format!("the pool is below its minimum of {}", policy.min),
        };
        return decision(desired, Action::ScaleOut, why);
    }
    if desired == current {
        let mut why = if wanted.is_empty() {
            "no metric could be read".to_string()
        } else {
            "the metrics are on target".to_string()
        };
        let waiting = current.saturating_sub(pool.serving);
        if waiting > 0 {
            why.push_str(&format!(", counting {waiting} droplet(s) not serving yet"));
        }
        return decision(current, Action::Hold, why);
    }
    // Above the maximum is no metric decision, so it needs no data.
    if current <= policy.max && !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|r| metric_name(r.metric).to_string())
            .collect();
        return decision(
            current,
            Action::Hold,
            format!("no scale-in without data for {}", names.join(", ")),
        );
    }
    if let Some(last) = last_scaled {
        let since = now.duration_since(last).unwrap_or(Duration::ZERO);
        if since < policy.cooldown {
            let left = humantime::format_duration(Duration::from_secs(
                (policy.cooldown - since).as_secs().max(1),
            ));
            return decision(
                current,
                Action::Hold,
                format!("cooling down for another {left}"),
            );
        }
    }
    let target = desired.max(current.saturating_sub(policy.scale_in_step));
    decision(
        target,
        Action::ScaleIn,
        "the metrics ask for fewer".to_string(),
    )
}

/// ceil(n × value / target), with an empty pool counted as one droplet so
/// that load on it still asks for capacity.
fn desired_for(current: usize, value: f64, target: f64) -> usize {
    let n = current.max(1) as f64;
    (n * value / target - 1e-9).ceil().max(0.0) as usize
}

pub fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::SessionsPerServer => "sessions_per_server",
        Metric::RequestRatePerServer => "request_rate_per_server",
        Metric::QueuedPerServer => "queued_per_server",
        Metric::CpuPercent => "cpu_percent",
        Metric::ResponseTimeMs => "response_time_ms",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 2,
            max: 10,
            targets: vec![
                (Metric::SessionsPerServer, 50.0),
                (Metric::CpuPercent, 70.0),
            ],
            cooldown: Duration::from_secs(300),
            scale_in_step: 1,
            interval: Duration::from_secs(60),
            schedule: Vec::new(),
        }
    }

    fn reading(metric: Metric, target: f64, value: Option<f64>) -> Reading {
        Reading {
            metric,
            target,
            value,
            problem: None,
        }
    }

    fn readings(sessions: Option<f64>, cpu: Option<f64>) -> Vec<Reading> {
        vec![
            reading(Metric::SessionsPerServer, 50.0, sessions),
            reading(Metric::CpuPercent, 70.0, cpu),
        ]
    }

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    /// A pool of `n` droplets, every one serving.
    fn serving(n: usize) -> PoolSize {
        PoolSize {
            total: n,
            serving: n,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn the_busiest_metric_wins_and_scale_out_is_immediate() {
        // 4 × 100/50 = 8 by sessions, 4 × 35/70 = 2 by CPU.
        let d = decide(
            &policy(),
            serving(4),
            &readings(Some(100.0), Some(35.0)),
            Some(at(1_000)),
            at(1_001),
        );
        assert_eq!((d.desired, d.target, d.action), (8, 8, Action::ScaleOut));
    }

    #[test]
    fn min_and_max_clamp() {
        let d = decide(
            &policy(),
            serving(4),
            &readings(Some(1_000.0), None),
            None,
            NOW,
        );
        assert_eq!((d.desired, d.action), (10, Action::ScaleOut));
        let d = decide(
            &policy(),
            serving(1),
            &readings(Some(0.0), Some(0.0)),
            None,
            NOW,
        );
        assert_eq!((d.desired, d.action), (2, Action::ScaleOut));
        assert!(d.reason.contains("minimum"), "{}", d.reason);
    }

    #[test]
    fn scale_in_waits_for_the_cooldown_and_goes_one_step() {
        let quiet = readings(Some(0.0), Some(0.0));
        let d = decide(&policy(), serving(6), &quiet, Some(at(1_000)), at(1_100));
        assert_eq!((d.desired, d.action), (2, Action::Hold));
        assert!(d.reason.contains("cooling down"), "{}", d.reason);
        let d = decide(&policy(), serving(6), &quiet, Some(at(1_000)), at(1_300));
        assert_eq!((d.desired, d.target, d.action), (2, 5, Action::ScaleIn));
        let mut big_steps = policy();
        big_steps.scale_in_step = 10;
        let d = decide(&big_steps, serving(6), &quiet, None, NOW);
        assert_eq!((d.target, d.action), (2, Action::ScaleIn));
    }

    #[test]
    fn missing_data_never_scales_in() {
        let d = decide(&policy(), serving(6), &readings(Some(0.0), None), None, NOW);
        assert_eq!(d.action, Action::Hold);
        assert!(d.reason.contains("cpu_percent"), "{}", d.reason);
        // ... but still scales out on what it has.
        let d = decide(
            &policy(),
            serving(6),
            &readings(Some(100.0), None),
            None,
            NOW,
        );
        assert_eq!((d.target, d.action), (10, Action::ScaleOut));
        let d = decide(&policy(), serving(6), &readings(None, None), None, NOW);
        assert_eq!((d.desired, d.action), (6, Action::Hold));
    }

    #[test]
    fn an_empty_pool_grows_to_its_minimum_or_on_load() {
        let d = decide(&policy(), serving(0), &readings(None, None), None, NOW);
        assert_eq!((d.target, d.action), (2, Action::ScaleOut));
        let mut none_min = policy();
        none_min.min = 0;
        let d = decide(
            &none_min,
            serving(0),
            &readings(Some(120.0), None),
            None,
            NOW,
        );
        assert_eq!((d.target, d.action), (3, Action::ScaleOut));
        let d = decide(&none_min, serving(0), &readings(None, None), None, NOW);
        assert_eq!(d.action, Action::Hold);
    }

    #[test]
    fn above_max_shrinks_even_without_data() {
        let d = decide(&policy(), serving(12), &readings(None, None), None, NOW);
        assert_eq!((d.desired, d.target, d.action), (10, 11, Action::ScaleIn));
    }

    #[test]
    fn exact_targets_hold() {
        let d = decide(
            &policy(),
            serving(4),
            &readings(Some(50.0), Some(70.0)),
            None,
            NOW,
        );
        assert_eq!((d.desired, d.action), (4, Action::Hold));
    }

    #[test]
    fn droplets_still_booting_count_toward_the_pool() {
        // 1 serving at 150 sessions (target 50) wants 3; 2 more are booting.
        let booting = PoolSize {
            total: 3,
            serving: 1,
        };
        let d = decide(&policy(), booting, &readings(Some(150.0), None), None, NOW);
        assert_eq!((d.desired, d.action), (3, Action::Hold));
        assert!(
            d.reason.contains("2 droplet(s) not serving yet"),
            "{}",
            d.reason
        );
        // More load asks only for what the booting ones do not bring.
        let d = decide(&policy(), booting, &readings(Some(250.0), None), None, NOW);
        assert_eq!((d.current, d.target, d.action), (3, 5, Action::ScaleOut));
        // A pool at max never grows, however few of it serve yet.
        let full = PoolSize {
            total: 10,
            serving: 1,
        };
        let d = decide(&policy(), full, &readings(Some(5_000.0), None), None, NOW);
        assert_eq!((d.target, d.action), (10, Action::Hold));
        // Nothing serves yet, but the minimum is on its way.
        let starting = PoolSize {
            total: 2,
            serving: 0,
        };
        let d = decide(&policy(), starting, &readings(None, None), None, NOW);
        assert_eq!((d.target, d.action), (2, Action::Hold));
    }
}
