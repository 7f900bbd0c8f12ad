//! Bringing HAProxy to a new config: check it, install it atomically
//! (keeping the one before), then bring the running HAProxy to it through
//! the runtime API when only servers changed, else with a reload confirmed
//! on the admin socket; and leave the live config alone when a step fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::dynamic::{Layout, Step};
use super::loaded::{self, Loaded};
use super::runtime::Runtime;
use super::settings::Settings;
use super::{check_file, command, count_servers, stage, update_lock};
use crate::atomic_file::{self, sibling};
use crate::model::Entry;

/// How often to ask the admin socket whether a new worker took over.
const WORKER_POLL: Duration = Duration::from_millis(20);

/// Whether to reload when the rendered config equals the installed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// `doproxy reload`: the user asked for it.
    Always,
    /// After create and delete: an identical config that HAProxy has loaded
    /// needs no reload.
    IfChanged,
}

/// What `apply` did.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub staged: PathBuf,
    pub installed: PathBuf,
    pub servers: usize,
    pub changed: bool,
    pub reloaded: bool,
    /// HAProxy was brought to the new config through its runtime API,
    /// without a reload.
    pub runtime_updated: bool,
    /// HAProxy refused a step of a runtime update, so it was reloaded
    /// instead (for the metrics; not part of the result people see).
    #[serde(skip)]
    pub runtime_refused: bool,
}

/// `apply` ran haproxy_reload_command and HAProxy did not reload: the live
/// config was put back (as `left` says). The context of the error `apply`
/// returns then, so callers can tell this failure apart (and count it).
#[derive(Debug, thiserror::Error)]
#[error("HAProxy did not reload, so {live} {left}; fix the cause and run doproxy reload")]
pub struct ReloadFailed {
    live: String,
    left: String,
    /// The reload followed a runtime update HAProxy refused.
    pub runtime_refused: bool,
}

/// generate, check with haproxy_check_command, install into haproxy_cfg_path
/// (keeping the previous one as `.bak`), run haproxy_reload_command and, with
/// haproxy_socket, wait until a new worker answers. A failed check or reload
/// leaves the live config as it was.
///
/// With haproxy_socket (and haproxy_runtime_updates), a config that differs
/// from the one HAProxy runs only in its servers is brought live through the
/// runtime API instead: servers added, then removed, then checked, without a
/// reload. When HAProxy refuses a step, it is reloaded after all, saying so.
///
/// An unchanged config is reloaded all the same when HAProxy has not loaded
/// it (a run died between install and reload), or when nothing can tell.
/// Only a confirmed reload, or a runtime update after which HAProxy runs the
/// config's servers, is recorded as loaded.
///
/// A config without servers is refused while the live one has some, unless
/// `allow_empty`: bad inventory data must not empty the pool.
pub async fn apply(
    settings: &Settings,
    frontend_bind: &str,
    entries: &[Entry],
    reload: Reload,
    allow_empty: bool,
) -> Result<Applied> {
    let _updating = update_lock(settings).await?;
    let (text, servers) = stage(settings, frontend_bind, entries).await?;
    let staged = &settings.cfg_file;
    let live = &settings.cfg_path;
    check(settings, staged).await?;
    // What was rendered goes live, not whatever the staged file holds now.
    let new = text.into_bytes();
    let previous = fs::read(live).ok();
    let live_servers = previous.as_deref().map_or(0, count_servers);
    if servers == 0 && live_servers > 0 && !allow_empty {
        bail!(
            "the inventory gives HAProxy no servers while the live config {} has {live_servers}, so it was left alone; if the pool should really be empty run doproxy reload --allow-empty, otherwise fix the inventory (doproxy reconcile shows what is wrong)",
            live.display()
        );
    }
    let changed = previous.as_deref() != Some(new.as_slice());
    let mut applied = Applied {
        staged: staged.clone(),
        installed: live.clone(),
        servers,
        changed,
        reloaded: false,
        runtime_updated: false,
        runtime_refused: false,
    };
    if !changed && reload == Reload::IfChanged {
        match loaded::check(settings, &new).await {
            Loaded::Yes => {
                tracing::info!(
                    "HAProxy config {} is unchanged; no reload needed",
                    live.display()
                );
                return Ok(applied);
            }
            Loaded::No(reason) => tracing::warn!("{reason}; reloading it"),
            Loaded::Unknown(reason) => tracing::info!("{reason}; reloading once to be sure"),
        }
    }
    // Worked out before installing: it compares with what HAProxy runs now.
    let runtime_plan = match (changed, reload, previous.as_deref()) {
        (true, Reload::IfChanged, Some(previous)) => runtime_plan(settings, previous, &new).await,
        _ => None,
    };
    if changed {
        if let Some(previous) = &previous {
            atomic_file::write(&backup_path(live), previous)?;
        }
        atomic_file::write(live, &new)?;
    }
    match runtime_plan {
        Some(Ok((runtime, steps))) => match update_at_runtime(&runtime, &steps, &new).await {
            Ok(()) => {
                loaded::record(live, &new);
                tracing::info!(
                    "HAProxy runs {servers} servers from {} without a reload{}",
                    live.display(),
                    describe_steps(&steps)
                );
                applied.runtime_updated = true;
                return Ok(applied);
            }
            Err(err) => {
                applied.runtime_refused = true;
                tracing::warn!(
                    "could not update HAProxy through its runtime API ({err:#}); reloading it instead"
                )
            }
        },
        Some(Err(reason)) => tracing::info!("{reason}, so HAProxy is reloaded"),
        None => {}
    }
    if let Err(err) = reload_and_confirm(settings).await {
        // The failed reload stays the error; a failed restore only adds to it.
        let left = match changed.then(|| restore(live, previous.as_deref())) {
            None => "was left as it was".to_string(),
            Some(Ok(())) => "was put back as it was".to_string(),
            Some(Err(restore_err)) => format!(
                "could not be put back as it was either ({restore_err:#}), so it holds a config HAProxy has not loaded"
            ),
        };
        return Err(err.context(ReloadFailed {
            live: live.display().to_string(),
            left,
            runtime_refused: applied.runtime_refused,
        }));
    }
    loaded::record(live, &new);
    tracing::info!(
        "HAProxy reloaded with {servers} servers from {}",
        live.display()
    );
    applied.reloaded = true;
    Ok(applied)
}

/// Whether the runtime API can bring HAProxy from `previous` (the live
/// config) to `new`: the socket and the steps, or why not (a clause). None
/// when there is no runtime API to use.
async fn runtime_plan<'a>(
    settings: &'a Settings,
    previous: &[u8],
    new: &[u8],
) -> Option<Result<(Runtime<'a>, Vec<Step>), String>> {
    if !settings.runtime_updates {
        return None;
    }
    let runtime = Runtime::of(settings)?;
    let plan = match loaded::check(settings, previous).await {
        Loaded::Yes => Layout::parse(&String::from_utf8_lossy(previous))
            .steps_to(&Layout::parse(&String::from_utf8_lossy(new))),
        Loaded::No(reason) | Loaded::Unknown(reason) => Err(reason),
    };
    Some(plan.map(|steps| (runtime, steps)))
}

/// Takes `steps` through the admin socket, then confirms that HAProxy runs
/// exactly the servers of `new`.
async fn update_at_runtime(runtime: &Runtime<'_>, steps: &[Step], new: &[u8]) -> Result<()> {
    runtime.take(steps).await?;
    let running = runtime.servers().await?;
    if let Some(difference) = loaded::server_difference(new, &running) {
        bail!("after the runtime update HAProxy's servers are not the config's: {difference}");
    }
    Ok(())
}

/// "; added 2 server(s): www-1, www-2; removed 1 server(s): www-3", for
/// the log.
fn describe_steps(steps: &[Step]) -> String {
    let names = |add: bool| -> Vec<String> {
        steps
            .iter()
            .filter(|s| matches!(s, Step::Add { .. }) == add)
            .map(|s| match s {
                Step::Add { server, .. } | Step::Remove { server, .. } => server.clone(),
            })
            .collect()
    };
    let mut text = String::new();
    for (verb, servers) in [("added", names(true)), ("removed", names(false))] {
        if !servers.is_empty() {
            text.push_str(&format!(
                "; {verb} {} server(s): {}",
                servers.len(),
                crate::listing::abbreviated(&servers)
            ));
        }
    }
    text
}

/// Runs haproxy_reload_command and, with haproxy_socket, waits until a new
/// worker answers on it, so the new config serves before doproxy goes on
/// (reload commands such as `kill -USR2` return before HAProxy switches).
/// A worker that never changes is a failed reload.
async fn reload_and_confirm(settings: &Settings) -> Result<()> {
    let runtime = Runtime::of(settings);
    let old_worker = match &runtime {
        Some(runtime) => runtime.worker_pid().await.ok(),
        None => None,
    };
    let bound = settings.reload_timeout;
    command::run("haproxy_reload_command", &settings.reload_command, bound).await?;
    let Some(runtime) = runtime else {
        return Ok(());
    };
    let deadline = Instant::now() + bound;
    loop {
        if let Ok(pid) = runtime.worker_pid().await
            && Some(pid) != old_worker
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let socket = settings
                .socket
                .as_deref()
                .expect("a runtime has a socket")
                .display();
            let wait = humantime::format_duration(bound);
            match old_worker {
                Some(old) => bail!(
                    "haproxy_reload_command succeeded but HAProxy's worker {old} still answers on {socket} {wait} later (haproxy_reload_timeout), so the new config is not live; check that the command reloads the HAProxy behind haproxy_socket"
                ),
                None => bail!(
                    "haproxy_reload_command succeeded but no HAProxy worker answered on {socket} within {wait} (haproxy_reload_timeout); check that HAProxy runs with that admin socket"
                ),
            }
        }
        tokio::time::sleep(WORKER_POLL).await;
    }
}

/// Runs haproxy_check_command on the staged file.
async fn check(settings: &Settings, staged: &Path) -> Result<()> {
    check_file(settings, staged).await.with_context(|| {
        format!(
            "the generated config {} did not pass haproxy_check_command, so the live config {} was not touched; fix the template (or the command) and retry",
            staged.display(),
            settings.cfg_path.display()
        )
    })
}

fn restore(live: &Path, previous: Option<&[u8]>) -> Result<()> {
    match previous {
        Some(previous) => atomic_file::write(live, previous),
        None => fs::remove_file(live).with_context(|| format!("cannot remove {}", live.display())),
    }
}

fn backup_path(live: &Path) -> PathBuf {
    sibling(live, "bak")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_before_is_kept_beside_the_live_one() {
        assert_eq!(
            backup_path(Path::new("/etc/haproxy/haproxy.cfg")),
            Path::new("/etc/haproxy/haproxy.cfg.bak")
        );
    }
}
