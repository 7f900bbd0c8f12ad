//! `create`: make droplets, record them at once, wait until they are active
//! and ready, then put them in HAProxy with one reload.
//!
//! Each droplet is written to the inventory (status `new`) as soon as the API
//! accepts it, before the wait, so a run killed at any point leaves a record
//! of what it paid for. The wait runs without the lock, so concurrent runs
//! overlap their boots. When only part of a batch works out, the droplets
//! that came up are kept and reported, the ones that never became active are
//! destroyed, and the command exits 1.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use super::{App, Report};
use crate::cli::CreateArgs;
use crate::config::Config;
use crate::digitalocean::{Client, CreateRequest, Droplet};
use crate::haproxy::{self, Reload};
use crate::inventory::{Entry, Status};
use crate::progress;
use crate::readiness;
use crate::scaling::next_names;

/// The API creates at most this many droplets per request.
const MAX_PER_REQUEST: usize = 10;
/// The API refuses larger user data.
const MAX_USER_DATA: usize = 64 * 1024;

/// What a create asks for; `scale` builds one too.
pub struct CreateOptions {
    pub count: usize,
    pub timeout: Duration,
    pub lock_timeout: Duration,
    pub ready_wait: bool,
    pub destroy_unready: bool,
}

pub async fn run(app: &App, args: &CreateArgs) -> Result<Report> {
    let options = CreateOptions {
        count: args.count as usize,
        timeout: args.timeout,
        lock_timeout: args.lock.lock_timeout,
        ready_wait: !args.no_ready_wait,
        destroy_unready: args.destroy_unready,
    };
    create(app, &options).await
}

pub async fn create(app: &App, options: &CreateOptions) -> Result<Report> {
    let config = &app.config;
    let api = app.api()?;
    let (created, create_failure) = create_and_record(app, options).await?;
    let mut failures: Vec<String> = create_failure.into_iter().collect();

    // Without the lock, so other runs can create and delete while these boot.
    let (listed, stuck) =
        wait_until_active(api, config.pool_tag(), &created, options.timeout).await?;
    let booted: Vec<(u64, Ipv4Addr)> = listed
        .iter()
        .filter(|d| created.contains(&d.id) && !stuck.contains(&d.id))
        .filter_map(|d| Some((d.id, d.private_ipv4()?)))
        .collect();
    let ready = if options.ready_wait {
        let check = &config.health_check;
        readiness::wait_until_ready(check, &booted, check.ready_timeout).await?
    } else {
        booted.iter().map(|(id, _)| *id).collect()
    };
    let unready: Vec<u64> = booted
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !ready.contains(id))
        .collect();
    if !stuck.is_empty() {
        failures.push(format!(
            "droplet(s) {} did not become active within {}, so they were destroyed",
            list(&stuck),
            humantime::format_duration(options.timeout)
        ));
    }
    if !unready.is_empty() {
        failures.push(unready_failure(config, &unready, options.destroy_unready));
    }
    let mut doomed = stuck.clone();
    if options.destroy_unready {
        doomed.extend(&unready);
    }
    let mut destroyed = Vec::new();
    for (id, outcome) in api.delete_droplets(&doomed).await {
        match outcome {
            Ok(_) => destroyed.push(id),
            Err(err) => failures.push(format!(
                "could not destroy droplet {id} ({err}); run doproxy reconcile --apply"
            )),
        }
    }

    // Under the lock again: record the outcome, then one reload for the batch.
    let lock = app.store.lock(options.lock_timeout).await?;
    let mut entries = app.entries(Some(&lock)).await?;
    entries.retain(|e| !destroyed.contains(&e.id));
    for entry in entries.iter_mut().filter(|e| created.contains(&e.id)) {
        if let Some(droplet) = listed.iter().find(|d| d.id == entry.id) {
            entry.update_from(droplet);
        }
        if ready.contains(&entry.id) {
            entry.status = Status::Active;
        } else if unready.contains(&entry.id) {
            entry.status = Status::Unready;
        }
    }
    app.store.save(&entries, &lock).await?;
    let applied = haproxy::apply(config, &entries, Reload::IfChanged, false)
        .await
        .context(
            "the droplets are active and recorded in the inventory, but HAProxy was not updated",
        )?;

    let text = created
        .iter()
        .filter(|id| ready.contains(id))
        .map(|id| format!("Success: {id} created and added to backend."))
        .collect();
    let added: Vec<&Entry> = entries.iter().filter(|e| ready.contains(&e.id)).collect();
    let report = Report::new(
        text,
        json!({ "created": added, "unready": unready, "destroyed": destroyed, "haproxy": applied }),
    )?;
    if failures.is_empty() {
        return Ok(report);
    }
    Ok(report.failed(anyhow!("{}", failures.join("; "))))
}

/// Under the lock: picks free names, creates the droplets (up to ten per
/// request) and records each batch as soon as the API accepts it. Returns the
/// IDs created and, when a later batch failed, why; fails only when nothing
/// was created.
async fn create_and_record(
    app: &App,
    options: &CreateOptions,
) -> Result<(Vec<u64>, Option<String>)> {
    let config = &app.config;
    let spec = config.droplet_spec()?;
    let user_data = read_user_data(config)?;
    let api = app.api()?;
    let lock = app.store.lock(options.lock_timeout).await?;
    let mut entries = app.entries(Some(&lock)).await?;
    let names = next_names(
        spec.hostname_prefix,
        entries.iter().map(|e| e.name.as_str()),
        options.count,
    );
    let mut created = Vec::new();
    for batch in names.chunks(MAX_PER_REQUEST) {
        let (name, names) = match batch {
            [one] => (Some(one.as_str()), None),
            many => (None, Some(many)),
        };
        let request = CreateRequest {
            name,
            names,
            region: spec.region,
            size: spec.size,
            image: spec.image,
            ssh_keys: &config.ssh_keys,
            user_data: user_data.as_deref(),
            tags: &config.tags,
            monitoring: true,
        };
        lock.check().await?;
        let outcome = match api.create_droplets(&request, config.pool_tag()).await {
            Ok(outcome) => outcome,
            Err(err) if created.is_empty() => {
                return Err(anyhow::Error::new(err)
                    .context(format!("cannot create droplet(s) {}", batch.join(", "))));
            }
            Err(err) => {
                return Ok((
                    created,
                    Some(format!(
                        "cannot create droplet(s) {}: {err}",
                        batch.join(", ")
                    )),
                ));
            }
        };
        if outcome.recovered {
            tracing::info!(
                "the lost create did make {} droplet(s); not creating them again",
                outcome.droplets.len()
            );
        }
        for droplet in &outcome.droplets {
            tracing::info!(
                "droplet {} ({}) accepted; waiting for it to become active",
                droplet.id,
                droplet.name
            );
            created.push(droplet.id);
            entries.push(Entry::from_droplet(droplet));
        }
        app.store.save(&entries, &lock).await?;
    }
    lock.release().await;
    Ok((created, None))
}

fn unready_failure(config: &Config, unready: &[u64], destroyed: bool) -> String {
    let check = &config.health_check;
    let what = format!(
        "droplet(s) {} did not answer GET {} on port {} with {} within {}",
        list(unready),
        check.path,
        check.port,
        check.status,
        humantime::format_duration(check.ready_timeout)
    );
    if destroyed {
        format!(
            "{what}, so they were destroyed; check the user data (userdata_file) and the health check settings"
        )
    } else {
        format!(
            "{what}; they are kept out of HAProxy as unready: fix them and run doproxy reconcile --apply to add them, or delete them with doproxy delete --id {}",
            unready
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

fn list(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user data to send: the contents of userdata_file, if one is set.
fn read_user_data(config: &Config) -> Result<Option<String>> {
    let Some(path) = &config.userdata_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read userdata_file {}; fix the path in {}, or remove the key to create droplets without user data",
            path.display(),
            config.path.display()
        )
    })?;
    if text.len() > MAX_USER_DATA {
        bail!(
            "userdata_file {} is {} bytes; DigitalOcean accepts at most 64 KiB, so shorten it",
            path.display(),
            text.len()
        );
    }
    Ok(Some(text))
}

/// Polls the pool's droplets (one list call per poll, whatever their number)
/// until every droplet in `ids` is active with a private address, or
/// `timeout` passes. Returns the last listing and the droplets that did not
/// make it (still booting, or gone).
async fn wait_until_active(
    api: &Client,
    tag: &str,
    ids: &[u64],
    timeout: Duration,
) -> Result<(Vec<Droplet>, Vec<u64>)> {
    let started = Instant::now();
    let mut pending: HashSet<u64> = ids.iter().copied().collect();
    let mut status = progress::Status::new();
    loop {
        status.show(&format!(
            "{} of {} droplet(s) active",
            ids.len() - pending.len(),
            ids.len()
        ));
        tokio::time::sleep(poll_interval(started.elapsed())).await;
        let listed = api
            .list_droplets(tag)
            .await
            .context("cannot check on the new droplets")?;
        for droplet in &listed {
            if let (Status::Active, Some(ip)) =
                (Status::from_api(&droplet.status), droplet.private_ipv4())
                && pending.remove(&droplet.id)
            {
                tracing::info!(
                    "droplet {} ({}) is active at {ip}",
                    droplet.id,
                    droplet.name
                );
            }
        }
        if pending.is_empty() || started.elapsed() >= timeout {
            let stuck = ids
                .iter()
                .copied()
                .filter(|id| pending.contains(id))
                .collect();
            return Ok((listed, stuck));
        }
    }
}

/// Short polls while a droplet may be about to come up (a boot takes
/// seconds), longer ones once it is clearly taking its time.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(10) {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_stay_within_two_seconds() {
        assert_eq!(poll_interval(Duration::ZERO), Duration::from_millis(250));
        assert_eq!(
            poll_interval(Duration::from_secs(60)),
            Duration::from_secs(2)
        );
    }
}
