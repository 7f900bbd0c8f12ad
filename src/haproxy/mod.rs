//! HAProxy: render the config from the inventory, check it with HAProxy
//! itself, install it atomically, then bring HAProxy to it: through the
//! runtime API when only servers changed (no reload, no new worker), else
//! with a reload — and leave the live config alone when any step fails.
//! Certificates and maps change at runtime too (tls.rs). Every command and
//! socket exchange is bounded, and nothing here blocks the async runtime.

mod command;
mod dynamic;
mod install;
mod loaded;
mod render;
mod runtime;
mod servers;
mod settings;
mod tls;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::atomic_file::{self, Readers, sibling};
use crate::certificate::CertifiedKey;
use crate::lockfile::LockFile;
use crate::model::Entry;
pub use install::{Applied, Reload, ReloadFailed, apply};
pub use loaded::Loaded;
pub use render::BUILTIN_TEMPLATE;
use render::{TemplateContext, render};
pub use runtime::{Runtime, ServerStat};
pub use servers::{drain, pool_load, server_states, undrain};
pub use settings::{Settings, TlsSettings};

/// How long to wait for another run's HAProxy update on this machine.
const UPDATE_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Renders the config for `entries` (`frontend_bind` is where its
/// frontend listens) and writes it to haproxy_cfg_file
/// (readable by everyone when new, as HAProxy's own config is), under the
/// update lock `apply` takes, so a `generate` never rewrites the staged
/// file while another run checks and installs it. Returns the number of
/// servers in it.
pub async fn generate(
    settings: &Settings,
    frontend_bind: &str,
    entries: &[Entry],
) -> Result<usize> {
    let _updating = update_lock(settings).await?;
    Ok(stage(settings, frontend_bind, entries).await?.1)
}

/// Renders the config for `entries` into haproxy_cfg_file; the caller holds
/// the update lock. Returns the text and the number of servers in it.
pub(super) async fn stage(
    settings: &Settings,
    frontend_bind: &str,
    entries: &[Entry],
) -> Result<(String, usize)> {
    let (text, servers) = render_config(settings, frontend_bind, entries)?;
    atomic_file::write_for(&settings.cfg_file, text.as_bytes(), Readers::Everyone)?;
    ensure_tls_files(settings)?;
    Ok((text, servers))
}

/// With HTTPS, the files the config names and HAProxy needs to start: the
/// certificate (a self-signed stand-in for the domains until the first one
/// is installed) and the challenge map (empty). Existing ones are kept.
pub fn ensure_tls_files(settings: &Settings) -> Result<()> {
    let Some(tls) = &settings.tls else {
        return Ok(());
    };
    if !tls.certificate_file.exists() {
        let placeholder = CertifiedKey::placeholder(&tls.domains)?;
        atomic_file::write_for(
            &tls.certificate_file,
            placeholder.bundle_pem().as_bytes(),
            Readers::Owner,
        )?;
        tracing::info!(
            "wrote a self-signed stand-in certificate to {} so that HAProxy can start; doproxy cert renew replaces it",
            tls.certificate_file.display()
        );
    }
    if !tls.challenge_map.exists() {
        atomic_file::write(&tls.challenge_map, b"")?;
    }
    Ok(())
}

/// One HAProxy update at a time on this machine: `watch`, `generate` and a
/// command run by hand must not interleave their writes and reloads.
pub(super) async fn update_lock(settings: &Settings) -> Result<LockFile> {
    LockFile::acquire(&lock_path(&settings.cfg_file), UPDATE_LOCK_TIMEOUT).await
}

/// The config text for `entries` from the configured template, its
/// frontend listening on `frontend_bind`, and the number of servers in it.
pub fn render_config(
    settings: &Settings,
    frontend_bind: &str,
    entries: &[Entry],
) -> Result<(String, usize)> {
    let context = TemplateContext::new(
        entries,
        frontend_bind.to_string(),
        settings.backend_port,
        settings.socket.as_deref(),
        &settings.health_check,
        settings.stats_bind.as_deref(),
        settings.tls.as_ref(),
    );
    let text = match &settings.template_file {
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
pub async fn check_file(settings: &Settings, file: &Path) -> Result<()> {
    let command = settings.check_command.replace("{file}", &shell_quote(file));
    command::run("haproxy_check_command", &command, settings.check_timeout).await
}

/// Whether HAProxy could serve `entries` (the pool as it will be, droplets
/// about to be made included): the template renders, haproxy_check_command
/// accepts the result, and, with haproxy_socket, HAProxy answers on it (new
/// servers join through it, and a reload is confirmed on it). Checked before
/// droplets are paid for; the staged and live configs are left alone.
pub async fn check_servable(
    settings: &Settings,
    frontend_bind: &str,
    entries: &[Entry],
) -> Result<()> {
    let (text, _) = render_config(settings, frontend_bind, entries)?;
    ensure_tls_files(settings)?;
    let file = sibling(&settings.cfg_file, "precheck");
    atomic_file::write(&file, text.as_bytes())?;
    let checked = check_file(settings, &file).await;
    let _ = fs::remove_file(&file);
    checked.context(
        "the config with the new servers did not pass haproxy_check_command; fix the template (or the command) and retry",
    )?;
    if let Some(runtime) = Runtime::of(settings) {
        runtime
            .worker_pid()
            .await
            .context("new servers could not join HAProxy")?;
    }
    Ok(())
}

/// The PID of the HAProxy worker answering on haproxy_socket; None when the
/// socket is not set.
pub async fn worker_pid(settings: &Settings) -> Option<Result<u32>> {
    Some(Runtime::of(settings)?.worker_pid().await)
}

/// Whether HAProxy runs the config installed in haproxy_cfg_path; None when
/// nothing is installed yet.
pub async fn loaded(settings: &Settings) -> Option<Loaded> {
    let installed = fs::read(&settings.cfg_path).ok()?;
    Some(loaded::check(settings, &installed).await)
}

/// How HAProxy differs from what the inventory `entries` gives: the live
/// config is not the one they render, or HAProxy has not loaded it. None
/// when they agree (or nothing can tell).
pub async fn divergence(
    settings: &Settings,
    frontend_bind: &str,
    entries: &[Entry],
) -> Result<Option<String>> {
    let (rendered, servers) = render_config(settings, frontend_bind, entries)?;
    let live = &settings.cfg_path;
    let installed = fs::read(live).ok();
    if installed.as_deref() != Some(rendered.as_bytes()) {
        let installed_servers = installed.as_deref().map_or(0, count_servers);
        return Ok(Some(format!(
            "the live config {} is not what the inventory gives ({installed_servers} server(s) instead of {servers})",
            live.display()
        )));
    }
    Ok(match loaded::check(settings, rendered.as_bytes()).await {
        Loaded::No(reason) => Some(reason),
        Loaded::Yes | Loaded::Unknown(_) => None,
    })
}
/// The number of `server` lines in a config.
pub(super) fn count_servers(config: &[u8]) -> usize {
    String::from_utf8_lossy(config)
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .count()
}

fn lock_path(staged: &Path) -> PathBuf {
    sibling(staged, "lock")
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
    }
}
