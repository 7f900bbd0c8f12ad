//! The `autoscale:` and `heal:` sections, checked into the policies the
//! pure decisions take; errors are one sentence saying what to write.

use anyhow::{Context, Result, bail};

use super::Values;
use super::file::{AutoscaleFile, HealFile, ScheduleFile};
use crate::scaling::autoscale::{Metric, Policy, metric_name};
use crate::scaling::heal::Policy as HealPolicy;
use crate::scaling::schedule::{self, Cron, Window};

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
        (Metric::ResponseTimeMs, section.response_time_ms),
    ]
    .into_iter()
    .filter_map(|(metric, target)| Some((metric, target?)))
    .collect();
    if targets.is_empty() {
        bail!(
            "give at least one target: sessions_per_server, request_rate_per_server, queued_per_server, cpu_percent or response_time_ms"
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
    let interval = values.positive("autoscale.interval", section.interval, 60)?;
    Ok(Policy {
        min,
        max,
        targets,
        cooldown: values.duration("autoscale.cooldown", section.cooldown, 300)?,
        scale_in_step,
        interval,
        schedule: section
            .schedule
            .into_iter()
            .enumerate()
            .map(|(n, entry)| window(n, entry, values))
            .collect::<Result<_>>()?,
    })
}

/// Checks window `n` (from 0) of autoscale.schedule.
fn window(n: usize, entry: ScheduleFile, values: &Values) -> Result<Window> {
    let name = entry.name.unwrap_or_else(|| format!("{}", n + 1));
    let within = |err: String| anyhow::anyhow!("schedule window {name}: {err}");
    let cron = Cron::parse(&entry.cron).map_err(within)?;
    let time_zone_name = entry.time_zone.unwrap_or_else(|| "UTC".to_string());
    let time_zone = jiff::tz::TimeZone::get(&time_zone_name).map_err(|_| {
        within(format!(
            "time_zone {time_zone_name:?} is not in the system's time zone database (/usr/share/zoneinfo, Debian's tzdata); write it like Europe/Berlin or UTC"
        ))
    })?;
    let duration = values.positive("autoscale.schedule.duration", Some(entry.duration), 0)?;
    if duration > schedule::MAX_DURATION {
        return Err(within("duration is at most 7d".to_string()));
    }
    if entry.max == 0 || entry.min > entry.max {
        return Err(within(format!(
            "min ({}) must not exceed max ({}), and max must be at least 1",
            entry.min, entry.max
        )));
    }
    Ok(Window {
        name,
        cron,
        cron_text: entry.cron,
        time_zone,
        time_zone_name,
        duration,
        min: entry.min,
        max: entry.max,
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
    let interval = values.positive(
        "heal.interval",
        section.interval,
        defaults.interval.as_secs(),
    )?;
    Ok(HealPolicy {
        grace: values.duration("heal.grace", section.grace, defaults.grace.as_secs())?,
        max_share_per_hour,
        outage_share,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;

    fn schedule(windows: &str) -> anyhow::Result<Config> {
        let text = format!("autoscale:\n  max: 4\n  cpu_percent: 50\n  schedule:\n{windows}");
        Config::parse(&text, Path::new("/x/d.yml"), |_| None)
    }

    #[test]
    fn schedule_windows_are_checked() {
        let config = schedule(
            "    - {name: day, cron: \"0 8 * * mon-fri\", time_zone: Europe/Berlin, duration: 10h, min: 3, max: 12}\n    - {cron: \"0 0 * * *\", duration: 1h, min: 1, max: 2}\n",
        )
        .unwrap();
        let windows = config.autoscale.unwrap().schedule;
        assert_eq!(windows.len(), 2);
        assert_eq!(
            (windows[0].name.as_str(), windows[0].min, windows[0].max),
            ("day", 3, 12)
        );
        assert_eq!(windows[0].duration, Duration::from_secs(36000));
        assert_eq!(
            (windows[1].name.as_str(), windows[1].time_zone_name.as_str()),
            ("2", "UTC")
        );
        for (window, says) in [
            (
                "{cron: \"0 8 * *\", duration: 1h, min: 1, max: 2}",
                "4 fields",
            ),
            (
                "{cron: \"0 8 * * *\", time_zone: Mars/Olympus, duration: 1h, min: 1, max: 2}",
                "not in the system's time zone database",
            ),
            (
                "{cron: \"0 8 * * *\", duration: 8d, min: 1, max: 2}",
                "at most 7d",
            ),
            (
                "{cron: \"0 8 * * *\", duration: 0s, min: 1, max: 2}",
                "longer than 0s",
            ),
            (
                "{cron: \"0 8 * * *\", duration: 1h, min: 3, max: 2}",
                "must not exceed",
            ),
        ] {
            let err = format!("{:#}", schedule(&format!("    - {window}\n")).unwrap_err());
            assert!(
                err.contains("autoscale") && err.contains(says),
                "{window}: {err}"
            );
        }
    }
}
