//! Simulated CPU time counters, like the DigitalOcean agent's per-mode
//! `node_cpu_seconds_total`, whose rates follow the utilization a test sets:
//! a client computing `1 - Δidle/Δtotal` over any window reads it back.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// How busy time is split between the non-idle modes (iowait and irq stay flat).
const BUSY_SHARES: [(&str, f64); 7] = [
    ("user", 0.7),
    ("system", 0.22),
    ("softirq", 0.03),
    ("steal", 0.03),
    ("nice", 0.02),
    ("iowait", 0.0),
    ("irq", 0.0),
];

/// At most this many points per series.
const MAX_POINTS: u64 = 30;

/// Counters as linear functions of time since the last utilization change
/// (the anchor). Each change re-anchors at the current values, so counters
/// never go back for times after it; a window reaching before the last
/// change is extrapolated at the current rate, so it still reads back the
/// utilization just set.
pub(crate) struct Cpu {
    vcpus: f64,
    anchor: f64,
    idle: f64,
    busy: f64,
    utilization: f64,
}

impl Cpu {
    /// An idle machine that has been up for a day, as far as its counters tell.
    pub(crate) fn new(vcpus: u32, now: SystemTime) -> Cpu {
        let vcpus = f64::from(vcpus);
        Cpu {
            vcpus,
            anchor: seconds(now),
            idle: vcpus * 86_000.0,
            busy: vcpus * 400.0,
            utilization: 0.0,
        }
    }

    pub(crate) fn set(&mut self, percent: f64, now: SystemTime) {
        let anchor = seconds(now);
        let (idle, busy) = self.at(anchor);
        *self = Cpu {
            anchor,
            idle,
            busy,
            utilization: (percent / 100.0).clamp(0.0, 1.0),
            ..*self
        };
    }

    /// (idle, busy) CPU seconds at epoch second `t`.
    fn at(&self, t: f64) -> (f64, f64) {
        let cpu_seconds = self.vcpus * (t - self.anchor);
        (
            (self.idle + cpu_seconds * (1.0 - self.utilization)).max(0.0),
            (self.busy + cpu_seconds * self.utilization).max(0.0),
        )
    }

    /// The `metrics_result` series for one host over [start, end]: one per
    /// mode, each with points from `start` every step up to `end`.
    pub(crate) fn series(&self, host_id: u64, start: u64, end: u64) -> Vec<Value> {
        let step = (end - start).div_ceil(MAX_POINTS).max(1);
        let times: Vec<u64> = (start..=end).step_by(step as usize).collect();
        let mode = |name: &str, value: &dyn Fn(f64) -> f64| {
            let values: Vec<Value> = times
                .iter()
                .map(|&t| json!([t, number(value(t as f64))]))
                .collect();
            json!({"metric": {"host_id": host_id.to_string(), "mode": name}, "values": values})
        };
        let mut series = vec![mode("idle", &|t| self.at(t).0)];
        for (name, share) in BUSY_SHARES {
            series.push(mode(name, &|t| self.at(t).1 * share));
        }
        series
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Prometheus writes sample values as strings: "122901.18", "7.9", "0".
fn number(value: f64) -> String {
    let fixed = format!("{value:.2}");
    fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What a client computes from the first and last point of each series.
    fn utilization(series: &[Value]) -> f64 {
        let delta = |s: &Value| {
            let values = s["values"].as_array().unwrap();
            let value = |p: &Value| p[1].as_str().unwrap().parse::<f64>().unwrap();
            value(values.last().unwrap()) - value(&values[0])
        };
        let idle = delta(&series[0]);
        let total: f64 = series.iter().map(delta).sum();
        1.0 - idle / total
    }

    #[test]
    fn reads_back_the_utilization_set() {
        let created = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut cpu = Cpu::new(2, created);
        let now = created + Duration::from_secs(600);
        let (start, end) = (1_700_000_300, 1_700_000_600);
        assert!(utilization(&cpu.series(7, start, end)).abs() < 1e-3);
        cpu.set(85.0, now);
        let series = cpu.series(7, start, end);
        assert_eq!(series.len(), 8);
        assert_eq!(series[0]["metric"]["mode"], "idle");
        assert_eq!(series[0]["metric"]["host_id"], "7");
        assert!((utilization(&series) - 0.85).abs() < 1e-3);
        // Later windows see the same rate, and counters only grow.
        let later = cpu.series(7, end, end + 300);
        assert!((utilization(&later) - 0.85).abs() < 1e-3);
        assert_eq!(later[0]["values"].as_array().unwrap().len(), 31);
    }

    #[test]
    fn numbers_look_like_prometheus() {
        assert_eq!(number(122_901.181), "122901.18");
        assert_eq!(number(7.9), "7.9");
        assert_eq!(number(0.0), "0");
    }
}
