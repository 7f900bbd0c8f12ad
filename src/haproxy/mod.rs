//! HAProxy: render the config from the inventory, check it with HAProxy
//! itself, install it atomically, then bring HAProxy to it: through the
//! runtime API when only servers changed (no reload, no new worker), else
//! with a reload — and leave the live config alone when any step fails.
//! Certificates and maps change at runtime too (tls.rs). Every command and
//! socket exchange is bounded, and nothing here blocks the async runtime.

mod bind;
mod command;
mod dynamic;
mod loaded;
mod render;
mod runtime;
// Certificates and maps at runtime (HTTPS, #19): called by its tests until
// commands are wired to them.
#[cfg_attr(not(test), allow(dead_code))]
mod tls;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use crate::atomic_file::{self, Readers, sibling};
use crate::config::Config;
use crate::lockfile::LockFile;
use crate::model::Entry;
use dynamic::{Layout, Step};
pub use loaded::Loaded;
pub use render::BUILTIN_TEMPLATE;
use render::{TemplateContext, droplet_id, render};
use runtime::AdminState;
#[cfg_attr(not(test), allow(unused_imports))]
pub use runtime::Runtime;
pub use runtime::ServerStat;

/// How long to wait for another run's HAProxy update on this machine.
const UPDATE_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a drain checks whether sessions have ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);

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

/// Renders the config for `entries` and writes it to haproxy_cfg_file
/// (readable by everyone when new, as HAProxy's own config is), under the
/// update lock `apply` takes, so a `generate` never rewrites the staged
/// file while another run checks and installs it. Returns the number of
/// servers in it.
pub async fn generate(config: &Config, entries: &[Entry]) -> Result<usize> {
    let _updating = update_lock(config).await?;
    Ok(stage(config, entries).await?.1)
}

/// Renders the config for `entries` into haproxy_cfg_file; the caller holds
/// the update lock. Returns the text and the number of servers in it.
async fn stage(config: &Config, entries: &[Entry]) -> Result<(String, usize)> {
    let (text, servers) = render_config(config, entries).await?;
    atomic_file::write_for(&config.haproxy_cfg_file, text.as_bytes(), Readers::Everyone)?;
    Ok((text, servers))
}

/// One HAProxy update at a time on this machine: `watch`, `generate` and a
/// command run by hand must not interleave their writes and reloads.
async fn update_lock(config: &Config) -> Result<LockFile> {
    LockFile::acquire(&lock_path(&config.haproxy_cfg_file), UPDATE_LOCK_TIMEOUT).await
}

/// The config text for `entries` from the configured template, and the
/// number of servers in it.
pub async fn render_config(config: &Config, entries: &[Entry]) -> Result<(String, usize)> {
    let context = TemplateContext::new(
        entries,
        bind::frontend_bind(config).await,
        config.backend_port,
        config.haproxy_socket.as_deref(),
        &config.health_check,
        config.haproxy_stats_bind.as_deref(),
    );
    let text = match &config.haproxy_template_file {
        Some(path) => {
            let template = fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read haproxy_template_file {}; fix the path, or remove the key to use the built-in template",
                    path.display()
                )
            })?;
            render(&path.display().to_string(), &template, &context)?
        }
        None => render("the built-in template", BUILTIN_TEMPLATE, &context)?,
    };
    Ok((text, context.servers.len()))
}

/// Runs haproxy_check_command on a config file.
pub async fn check_file(config: &Config, file: &Path) -> Result<()> {
    let command = config
        .haproxy_check_command
        .replace("{file}", &shell_quote(file));
    command::run(
        "haproxy_check_command",
        &command,
        config.haproxy_check_timeout,
    )
    .await
}

/// Whether HAProxy could serve `entries` (the pool as it will be, droplets
/// about to be made included): the template renders, haproxy_check_command
/// accepts the result, and, with haproxy_socket, HAProxy answers on it (new
/// servers join through it, and a reload is confirmed on it). Checked before
/// droplets are paid for; the staged and live configs are left alone.
pub async fn check_servable(config: &Config, entries: &[Entry]) -> Result<()> {
    let (text, _) = render_config(config, entries).await?;
    let file = sibling(&config.haproxy_cfg_file, "precheck");
    atomic_file::write(&file, text.as_bytes())?;
    let checked = check_file(config, &file).await;
    let _ = fs::remove_file(&file);
    checked.context(
        "the config with the new servers did not pass haproxy_check_command; fix the template (or the command) and retry",
    )?;
    if let Some(runtime) = Runtime::of(config) {
        runtime
            .worker_pid()
            .await
            .context("new servers could not join HAProxy")?;
    }
    Ok(())
}

/// The PID of the HAProxy worker answering on haproxy_socket; None when the
/// socket is not set.
pub async fn worker_pid(config: &Config) -> Option<Result<u32>> {
    Some(Runtime::of(config)?.worker_pid().await)
}

/// Whether HAProxy runs the config installed in haproxy_cfg_path; None when
/// nothing is installed yet.
pub async fn loaded(config: &Config) -> Option<Loaded> {
    let installed = fs::read(&config.haproxy_cfg_path).ok()?;
    Some(loaded::check(config, &installed).await)
}

/// How HAProxy differs from what the inventory `entries` gives: the live
/// config is not the one they render, or HAProxy has not loaded it. None
/// when they agree (or nothing can tell).
pub async fn divergence(config: &Config, entries: &[Entry]) -> Result<Option<String>> {
    let (rendered, servers) = render_config(config, entries).await?;
    let live = &config.haproxy_cfg_path;
    let installed = fs::read(live).ok();
    if installed.as_deref() != Some(rendered.as_bytes()) {
        let installed_servers = installed.as_deref().map_or(0, count_servers);
        return Ok(Some(format!(
            "the live config {} is not what the inventory gives ({installed_servers} server(s) instead of {servers})",
            live.display()
        )));
    }
    Ok(match loaded::check(config, rendered.as_bytes()).await {
        Loaded::No(reason) => Some(reason),
        Loaded::Yes | Loaded::Unknown(_) => None,
    })
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
    config: &Config,
    entries: &[Entry],
    reload: Reload,
    allow_empty: bool,
) -> Result<Applied> {
    let _updating = update_lock(config).await?;
    let (text, servers) = stage(config, entries).await?;
    let staged = &config.haproxy_cfg_file;
    let live = &config.haproxy_cfg_path;
    check(config, staged).await?;
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
        match loaded::check(config, &new).await {
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
        (true, Reload::IfChanged, Some(previous)) => runtime_plan(config, previous, &new).await,
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
    if let Err(err) = reload_and_confirm(config).await {
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
    config: &'a Config,
    previous: &[u8],
    new: &[u8],
) -> Option<Result<(Runtime<'a>, Vec<Step>), String>> {
    if !config.haproxy_runtime_updates {
        return None;
    }
    let runtime = Runtime::of(config)?;
    let plan = match loaded::check(config, previous).await {
        Loaded::Yes => Layout::parse(&String::from_utf8_lossy(previous))
            .steps_to(&Layout::parse(&String::from_utf8_lossy(new))),
        Loaded::No(reason) | Loaded::Unknown(reason) => Err(reason),
    };
    Some(plan.map(|steps| (runtime, steps)))
}

/// Takes `steps` through the admin socket, then confirms that HAProxy runs
/// exactly the servers of `new`.
async fn update_at_runtime(runtime: &Runtime<'_>, steps: &[Step], new: &[u8]) -> Result<()> {
    for step in steps {
        runtime.take(step).await?;
    }
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
async fn reload_and_confirm(config: &Config) -> Result<()> {
    let runtime = Runtime::of(config);
    let old_worker = match &runtime {
        Some(runtime) => runtime.worker_pid().await.ok(),
        None => None,
    };
    let bound = config.haproxy_reload_timeout;
    command::run(
        "haproxy_reload_command",
        &config.haproxy_reload_command,
        bound,
    )
    .await?;
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
            let socket = config
                .haproxy_socket
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

/// HAProxy's view of each droplet's server (UP, DOWN, DRAIN, MAINT, ...),
/// by droplet ID, from the admin socket.
pub async fn server_states(config: &Config) -> Result<HashMap<u64, ServerStat>> {
    let Some(runtime) = Runtime::of(config) else {
        return Ok(HashMap::new());
    };
    Ok(runtime
        .servers()
        .await?
        .into_iter()
        .filter_map(|s| Some((droplet_id(&s.server)?, s)))
        .collect())
}

/// What HAProxy sees of the servers of droplets `ids`, for autoscaling.
#[derive(Debug, Default, PartialEq)]
pub struct PoolLoad {
    /// Current sessions, summed over the servers.
    pub sessions: u64,
    /// Sessions per second, summed over the servers.
    pub rate: u64,
    /// Requests queued at the servers and at their backends.
    pub queued: u64,
}

pub async fn pool_load(config: &Config, ids: &[u64]) -> Result<PoolLoad> {
    let runtime =
        Runtime::of(config).context("HAProxy metrics need its admin socket; set haproxy_socket")?;
    let rows = runtime.servers().await?;
    let mut load = PoolLoad::default();
    let mut backends = Vec::new();
    for row in rows.iter().filter(|r| serves_one_of(r, ids)) {
        load.sessions += row.sessions;
        load.rate += row.rate;
        load.queued += row.queued;
        if !backends.contains(&row.backend) {
            backends.push(row.backend.clone());
        }
    }
    load.queued += rows
        .iter()
        .filter(|r| r.server == "BACKEND" && backends.contains(&r.backend))
        .map(|r| r.queued)
        .sum::<u64>();
    Ok(load)
}

/// Takes the servers of droplets `ids` out of rotation in the running HAProxy
/// before they leave the config: `drain` (no new sessions), wait until their
/// sessions end (at most `timeout`), then `maint`. Does nothing without
/// haproxy_socket; servers HAProxy does not know are skipped. Callers that
/// stop on a signal drop this future and `undrain`.
pub async fn drain(config: &Config, ids: &[u64], timeout: Duration) -> Result<()> {
    let Some(runtime) = Runtime::of(config).filter(|_| !ids.is_empty()) else {
        return Ok(());
    };
    let targets = set_state(&runtime, ids, AdminState::Drain).await?;
    if !targets.is_empty() {
        tracing::info!("draining {} server(s) in HAProxy", targets.len());
    }
    let started = Instant::now();
    let mut status = crate::progress::Status::new();
    loop {
        let open: u64 = runtime
            .servers()
            .await?
            .iter()
            .filter(|s| {
                targets
                    .iter()
                    .any(|(b, n)| *b == s.backend && *n == s.server)
            })
            .map(|s| s.sessions)
            .sum();
        if open == 0 {
            break;
        }
        if started.elapsed() >= timeout {
            tracing::warn!(
                "{open} session(s) still open after draining for {}; removing the servers anyway",
                humantime::format_duration(timeout)
            );
            break;
        }
        status.show(&format!("draining: {open} session(s) still open"));
        tokio::time::sleep(DRAIN_POLL).await;
    }
    set_state(&runtime, ids, AdminState::Maint).await?;
    Ok(())
}

/// Puts drained servers back into rotation, after a delete that did not go
/// ahead.
pub async fn undrain(config: &Config, ids: &[u64]) -> Result<()> {
    let Some(runtime) = Runtime::of(config).filter(|_| !ids.is_empty()) else {
        return Ok(());
    };
    set_state(&runtime, ids, AdminState::Ready).await?;
    Ok(())
}

/// Sets the running servers of droplets `ids` to `state`; returns their
/// (backend, server) names.
async fn set_state(
    runtime: &Runtime<'_>,
    ids: &[u64],
    state: AdminState,
) -> Result<Vec<(String, String)>> {
    let targets: Vec<(String, String)> = runtime
        .servers()
        .await?
        .into_iter()
        .filter(|s| serves_one_of(s, ids))
        .map(|s| (s.backend, s.server))
        .collect();
    for (backend, server) in &targets {
        runtime.set_state(backend, server, state).await?;
    }
    Ok(targets)
}

/// Whether `row` is the server of one of droplets `ids`.
fn serves_one_of(row: &ServerStat, ids: &[u64]) -> bool {
    droplet_id(&row.server).is_some_and(|id| ids.contains(&id))
}

/// Runs haproxy_check_command on the staged file.
async fn check(config: &Config, staged: &Path) -> Result<()> {
    check_file(config, staged).await.with_context(|| {
        format!(
            "the generated config {} did not pass haproxy_check_command, so the live config {} was not touched; fix the template (or the command) and retry",
            staged.display(),
            config.haproxy_cfg_path.display()
        )
    })
}

fn restore(live: &Path, previous: Option<&[u8]>) -> Result<()> {
    match previous {
        Some(previous) => atomic_file::write(live, previous),
        None => fs::remove_file(live).with_context(|| format!("cannot remove {}", live.display())),
    }
}

/// The number of `server` lines in a config.
fn count_servers(config: &[u8]) -> usize {
    String::from_utf8_lossy(config)
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .count()
}

fn lock_path(staged: &Path) -> PathBuf {
    sibling(staged, "lock")
}

fn backup_path(live: &Path) -> PathBuf {
    sibling(live, "bak")
}

/// `path` as one word for `sh -c`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quote(Path::new("/a b/it's.cfg")),
            r"'/a b/it'\''s.cfg'"
        );
        assert_eq!(
            backup_path(Path::new("/etc/haproxy/haproxy.cfg")),
            Path::new("/etc/haproxy/haproxy.cfg.bak")
        );
    }
}
