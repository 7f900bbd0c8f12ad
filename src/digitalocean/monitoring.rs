//! DigitalOcean Monitoring: a droplet's CPU utilization, the signal
//! autoscale scales on, from the agent's per-mode CPU time counters.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde::Deserialize;

use super::client::{Client, parse};
use super::error::ApiError;

/// The `metrics` schema: a Prometheus matrix of CPU time counters per mode.
#[derive(Deserialize)]
struct Metrics {
    data: MetricsData,
}

#[derive(Deserialize)]
struct MetricsData {
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: SeriesLabels,
    /// `[unix time, "counter value"]` pairs.
    values: Vec<(f64, String)>,
}

#[derive(Deserialize)]
struct SeriesLabels {
    #[serde(default)]
    mode: String,
}

impl Metrics {
    /// Utilization = 1 - Δidle / Δall over the window, in percent.
    fn cpu_percent(&self) -> Option<(f64, SystemTime)> {
        let mut total = 0.0;
        let mut idle = 0.0;
        let mut newest: f64 = 0.0;
        for series in &self.data.result {
            let (Some(first), Some(last)) = (series.values.first(), series.values.last()) else {
                continue;
            };
            let delta = last.1.parse::<f64>().ok()? - first.1.parse::<f64>().ok()?;
            total += delta;
            if series.metric.mode == "idle" {
                idle += delta;
            }
            newest = newest.max(last.0);
        }
        // A timestamp no clock can hold is no sample.
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(newest).ok()?)?;
        (total > 0.0).then(|| (100.0 * (1.0 - idle / total), at))
    }
}

impl Client {
    /// A droplet's CPU utilization in percent over `window` up to `now`, from
    /// DigitalOcean Monitoring (the agent's per-mode CPU time counters), with
    /// the time of the newest sample; None when there is no data.
    pub async fn droplet_cpu(
        &self,
        id: u64,
        window: Duration,
        now: SystemTime,
    ) -> Result<Option<(f64, SystemTime)>, ApiError> {
        let epoch = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        };
        let query = [
            ("host_id", id.to_string()),
            ("start", epoch(now - window).to_string()),
            ("end", epoch(now).to_string()),
        ];
        let path = "/v2/monitoring/metrics/droplet/cpu";
        let metrics = self
            .with_retries(path, || async {
                parse::<Metrics>(&self.send(Method::GET, path, &query, None).await?)
            })
            .await?;
        Ok(metrics.cpu_percent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_utilization_comes_from_counter_deltas() {
        let metrics: Metrics = serde_json::from_value(serde_json::json!({"status": "success", "data": {
            "resultType": "matrix", "result": [
                {"metric": {"host_id": "1", "mode": "idle"}, "values": [[100, "1000"], [160, "1015"]]},
                {"metric": {"host_id": "1", "mode": "user"}, "values": [[100, "50"], [160, "95"]]},
                {"metric": {"host_id": "1", "mode": "irq"}, "values": [[100, "1"], [160, "1"]]}
            ]}}))
        .unwrap();
        let (percent, at) = metrics.cpu_percent().unwrap();
        assert!((percent - 75.0).abs() < 1e-9, "{percent}");
        assert_eq!(at, SystemTime::UNIX_EPOCH + Duration::from_secs(160));
        let empty: Metrics = serde_json::from_value(
            serde_json::json!({"status": "success", "data": {"result": []}}),
        )
        .unwrap();
        assert_eq!(empty.cpu_percent(), None);
    }

    #[test]
    fn an_absurd_sample_time_is_no_sample() {
        let metrics: Metrics =
            serde_json::from_value(serde_json::json!({"status": "success", "data": {
            "result": [{"metric": {"mode": "idle"}, "values": [[100, "1"], [1e300, "2"]]}]}}))
            .unwrap();
        assert_eq!(metrics.cpu_percent(), None);
    }
}
