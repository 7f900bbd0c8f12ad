//! `create`: make droplets, record them at once, wait until they are active,
//! then put them in HAProxy.
//!
//! Each droplet is written to the inventory (status `new`) as soon as the API
//! accepts it, before the wait, so a run killed at any point leaves a record
//! of what it paid for.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{App, Report};
use crate::cli::CreateArgs;
use crate::config::Config;
use crate::digitalocean::{Client, CreateRequest, Droplet};
use crate::haproxy::{self, Reload};
use crate::inventory::{Entry, Status};
use crate::readiness;
use crate::scaling::next_names;

/// The API creates at most this many droplets per request.
const MAX_PER_REQUEST: usize = 10;
/// The API refuses larger user data.
const MAX_USER_DATA: usize = 64 * 1024;

pub async fn run(app: &App, args: &CreateArgs) -> Result<Report> {
    let config = &app.config;
    let spec = config.droplet_spec()?;
    let user_data = read_user_data(config)?;
    let api = app.api()?;

    // Under the lock: pick free names, create, record each droplet at once.
    let lock = app.store.lock(args.lock.lock_timeout).await?;
    let mut entries = app.entries(Some(&lock)).await?;
    let names = next_names(
        spec.hostname_prefix,
        entries.iter().map(|e| e.name.as_str()),
        args.count as usize,
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
        let outcome = api
            .create_droplets(&request, config.pool_tag())
            .await
            .with_context(|| format!("cannot create droplet(s) {}", batch.join(", ")))?;
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
    drop(lock);

    // Without the lock, so other runs can create and delete while these boot.
    let listed = wait_until_active(api, config.pool_tag(), &created, args.timeout).await?;
    let booted: Vec<(u64, Ipv4Addr)> = listed
        .iter()
        .filter(|d| created.contains(&d.id))
        .filter_map(|d| Some((d.id, d.private_ipv4()?)))
        .collect();
    let ready = if args.no_ready_wait {
        created.clone()
    } else {
        let check = &config.health_check;
        readiness::wait_until_ready(check, &booted, check.ready_timeout).await?
    };
    let unready: Vec<u64> = created
        .iter()
        .copied()
        .filter(|id| !ready.contains(id))
        .collect();
    let mut destroyed = Vec::new();
    if args.destroy_unready {
        for (id, outcome) in api.delete_droplets(&unready).await {
            match outcome {
                Ok(_) => destroyed.push(id),
                Err(err) => tracing::warn!("could not destroy unready droplet {id}: {err}"),
            }
        }
    }

    // Under the lock again: record the outcome, then one reload for the whole
    // batch.
    let lock = app.store.lock(args.lock.lock_timeout).await?;
    let mut entries = app.entries(Some(&lock)).await?;
    entries.retain(|e| !destroyed.contains(&e.id));
    for entry in entries.iter_mut().filter(|e| created.contains(&e.id)) {
        if let Some(droplet) = listed.iter().find(|d| d.id == entry.id) {
            entry.update_from(droplet);
        }
        entry.status = if ready.contains(&entry.id) {
            Status::Active
        } else {
            Status::Unready
        };
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
    if unready.is_empty() {
        return Ok(report);
    }
    let list: Vec<String> = unready.iter().map(u64::to_string).collect();
    let check = &config.health_check;
    let what = format!(
        "droplet(s) {} did not answer GET {} on port {} with {} within {}",
        list.join(", "),
        check.path,
        check.port,
        check.status,
        humantime::format_duration(check.ready_timeout)
    );
    Ok(report.failed(if args.destroy_unready {
        anyhow::anyhow!("{what}, so they were destroyed; check the user data (userdata_file) and the health check settings")
    } else {
        anyhow::anyhow!(
            "{what}; they are kept out of HAProxy as unready: fix them and run doproxy reconcile --apply to add them, or delete them with doproxy delete --id {}",
            list.join(" ")
        )
    }))
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
/// until every droplet in `ids` is active with a private address; returns
/// the last listing.
async fn wait_until_active(
    api: &Client,
    tag: &str,
    ids: &[u64],
    timeout: Duration,
) -> Result<Vec<Droplet>> {
    let started = Instant::now();
    let mut pending: HashSet<u64> = ids.iter().copied().collect();
    loop {
        tokio::time::sleep(poll_interval(started.elapsed())).await;
        let listed = api
            .list_droplets(tag)
            .await
            .context("cannot check on the new droplets")?;
        for &id in ids {
            if !pending.contains(&id) {
                continue;
            }
            let Some(droplet) = listed.iter().find(|d| d.id == id) else {
                bail!("droplet {id} disappeared while starting; run doproxy reconcile to clean up");
            };
            if let (Status::Active, Some(ip)) =
                (Status::from_api(&droplet.status), droplet.private_ipv4())
            {
                tracing::info!("droplet {id} ({}) is active at {ip}", droplet.name);
                pending.remove(&id);
            }
        }
        if pending.is_empty() {
            return Ok(listed);
        }
        if started.elapsed() >= timeout {
            let waiting: Vec<String> = pending.iter().map(u64::to_string).collect();
            bail!(
                "droplet(s) {} did not become active within {}; they stay in the inventory as {} and out of HAProxy; run doproxy reconcile later",
                waiting.join(", "),
                humantime::format_duration(timeout),
                Status::New
            );
        }
    }
}

/// Short polls while a droplet may be about to come up, longer ones once it
/// is clearly taking its time.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(10) {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_stay_within_two_seconds() {
        assert_eq!(poll_interval(Duration::ZERO), Duration::from_millis(500));
        assert_eq!(
            poll_interval(Duration::from_secs(60)),
            Duration::from_secs(2)
        );
    }
}
