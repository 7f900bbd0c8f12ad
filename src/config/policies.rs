//! The `autoscale:` and `heal:` sections, checked into the policies the
//! pure decisions take; errors are one sentence saying what to write.

use anyhow::{Context, Result, bail};

use super::Values;
use super::file::{AutoscaleFile, HealFile};
use crate::scaling::autoscale::{Metric, Policy, metric_name};
use crate::scaling::heal::Policy as HealPolicy;

/// Checks the autoscale section; errors are one sentence saying what to write.
pub(super) fn autoscale_policy(section: AutoscaleFile, values: &Values) -> Result<Policy> {
    let targets: Vec<(Metric, f64)> = [
        (Metric::SessionsPerServer, section.sessions_per_server),
        (
            Metric::RequestRatePerServer,
            section.request_rate_per_server,
        ),
        (Metric::QueuedPerServer, section.queued_per_server),
        (Metric::CpuPercent, section.cpu_percent),
    ]
    .into_iter()
    .filter_map(|(metric, target)| Some((metric, target?)))
    .collect();
    if targets.is_empty() {
        bail!(
            "give at least one target: sessions_per_server, request_rate_per_server, queued_per_server or cpu_percent"
        );
    }
    if let Some((metric, target)) = targets.iter().find(|(_, t)| !(t.is_finite() && *t > 0.0)) {
        bail!(
            "{} must be a number above 0, not {target}",
            metric_name(*metric)
        );
    }
    if section.cpu_percent.is_some_and(|cpu| cpu > 100.0) {
        bail!("cpu_percent is a percentage of the droplet's CPUs, so at most 100");
    }
    let max = section
        .max
        .context("max is missing; say how many droplets the pool may grow to")?;
    let min = section.min.unwrap_or(1);
    if max == 0 || min > max {
        bail!("min ({min}) must not exceed max ({max}), and max must be at least 1");
    }
    let scale_in_step = section.scale_in_step.unwrap_or(1);
    if scale_in_step == 0 {
        bail!("scale_in_step must be at least 1");
    }
    let interval = values.duration("autoscale.interval", section.interval, 60)?;
    if interval.is_zero() {
        bail!("interval must be longer than 0s");
    }
    Ok(Policy {
        min,
        max,
        targets,
        cooldown: values.duration("autoscale.cooldown", section.cooldown, 300)?,
        scale_in_step,
        interval,
    })
}

/// Checks the heal section; errors are one sentence saying what to write.
pub(super) fn heal_policy(section: HealFile, values: &Values) -> Result<HealPolicy> {
    let defaults = HealPolicy::default();
    let max_share_per_hour = section
        .max_share_per_hour
        .unwrap_or(defaults.max_share_per_hour);
    if !(1..=100).contains(&max_share_per_hour) {
        bail!("max_share_per_hour is a percentage of the pool from 1 to 100");
    }
    let outage_share = section.outage_share.unwrap_or(defaults.outage_share);
    if outage_share > 100 {
        bail!("outage_share is a percentage of the pool from 0 to 100");
    }
    let interval = values.duration(
        "heal.interval",
        section.interval,
        defaults.interval.as_secs(),
    )?;
    if interval.is_zero() {
        bail!("interval must be longer than 0s");
    }
    Ok(HealPolicy {
        grace: values.duration("heal.grace", section.grace, defaults.grace.as_secs())?,
        max_share_per_hour,
        outage_share,
        interval,
    })
}
