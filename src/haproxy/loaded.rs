//! Installed is not loaded: whether the running HAProxy serves the config
//! installed in haproxy_cfg_path.
//!
//! A run that dies between installing a config and reloading (SIGKILL, a
//! power cut, a reload that failed) leaves a live file HAProxy never read; a
//! later run comparing only files would call it unchanged forever. So after
//! every confirmed reload doproxy keeps a copy of what HAProxy loaded
//! (`<haproxy_cfg_path>.loaded`), and with an admin socket it also compares
//! the servers HAProxy runs with the ones the live file names. A runtime
//! update (servers added or removed through the admin socket) records the
//! config it brought HAProxy to as well; a run stopped before recording it
//! leaves a record that differs from the live file only in server lines,
//! and then the servers HAProxy runs decide.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::dynamic::Layout;
use super::runtime::{Runtime, ServerStat};
use super::settings::Settings;
use crate::atomic_file;

/// Whether HAProxy runs the installed config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// It does, as far as the record and the admin socket can tell.
    Yes,
    /// It does not; why, as a clause.
    No(String),
    /// Nothing can tell (no record yet and no admin socket); why.
    Unknown(String),
}

/// Where the copy of the last config HAProxy confirmed loading lives.
fn record_path(live: &Path) -> PathBuf {
    atomic_file::sibling(live, "loaded")
}

/// Records `config` as what HAProxy runs now, after a confirmed reload or a
/// verified runtime update. A record that cannot be written only costs one
/// more reload next time.
pub fn record(live: &Path, config: &[u8]) {
    if let Err(err) = atomic_file::write(&record_path(live), config) {
        tracing::warn!("{err:#}; the next run will reload HAProxy once more to be sure");
    }
}

/// Whether HAProxy runs `installed`, the current text of haproxy_cfg_path.
pub async fn check(settings: &Settings, installed: &[u8]) -> Loaded {
    let live = &settings.cfg_path;
    let recorded = fs::read(record_path(live)).ok();
    let running = match Runtime::of(settings) {
        Some(runtime) => runtime.servers().await.ok(),
        None => None,
    };
    let unconfirmed = recorded.as_deref().filter(|r| *r != installed);
    if let Some(recorded) = unconfirmed {
        // Servers added or removed through the runtime API leave the frame
        // alone: then the servers HAProxy runs tell (a run stopped between
        // the runtime update and recording it). Anything else needs a reload.
        let only_servers = running.is_some()
            && Layout::parse(&String::from_utf8_lossy(recorded))
                .differs_only_in_servers(&Layout::parse(&String::from_utf8_lossy(installed)));
        if !only_servers {
            return Loaded::No(format!(
                "HAProxy has not loaded {}: it was installed but no reload confirmed it (doproxy was stopped, or the reload failed)",
                live.display()
            ));
        }
    }
    if let Some(running) = running {
        if let Some(difference) = server_difference(installed, &running) {
            return Loaded::No(match unconfirmed {
                Some(_) => format!(
                    "HAProxy has not loaded {}: it was installed but neither a reload nor the runtime API confirmed it (doproxy was stopped, or the update failed), and {difference}",
                    live.display()
                ),
                None => format!(
                    "HAProxy does not run the servers of {}: {difference}",
                    live.display()
                ),
            });
        }
        return Loaded::Yes;
    }
    match recorded {
        Some(_) => Loaded::Yes,
        None => Loaded::Unknown(format!(
            "nothing records whether HAProxy loaded {} yet (the first reload records it)",
            live.display()
        )),
    }
}

/// How the servers HAProxy runs (`show stat` rows) differ from those
/// `config` names, in the backends `config` defines; None when they agree.
/// Backends using `server-template` are skipped: their server names are
/// made by HAProxy.
pub(super) fn server_difference(config: &[u8], running: &[ServerStat]) -> Option<String> {
    let wanted = Layout::parse(&String::from_utf8_lossy(config)).server_names();
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    for (backend, servers) in &wanted {
        let Some(servers) = servers else { continue };
        let live: BTreeSet<&str> = running
            .iter()
            .filter(|row| row.backend == *backend && row.server != "BACKEND")
            .map(|row| row.server.as_str())
            .collect();
        missing.extend(
            servers
                .iter()
                .filter(|s| !live.contains(s.as_str()))
                .cloned(),
        );
        extra.extend(
            live.iter()
                .filter(|s| !servers.contains(**s))
                .map(|s| s.to_string()),
        );
    }
    let list = |names: &[String]| crate::listing::abbreviated(names);
    match (missing.is_empty(), extra.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!("it lacks {}", list(&missing))),
        (true, false) => Some(format!("it still runs {}", list(&extra))),
        (false, false) => Some(format!(
            "it lacks {} and still runs {}",
            list(&missing),
            list(&extra)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
global
    stats socket /run/haproxy/admin.sock level admin
frontend www-http
    bind *:80
    default_backend www-backend
backend www-backend
    balance roundrobin
    server www-1 10.0.0.1:80 check # id:1, hostname:web-0
    server www-2 10.0.0.2:80 check
    # server www-9 10.0.0.9:80 check
listen stats
    bind *:8404
backend dynamic
    server-template app 3 10.0.0.5:80
";

    fn rows(rows: &[(&str, &str)]) -> Vec<ServerStat> {
        rows.iter()
            .map(|(b, s)| ServerStat {
                backend: b.to_string(),
                server: s.to_string(),
                ..ServerStat::default()
            })
            .collect()
    }

    #[test]
    fn running_servers_are_compared_with_the_config() {
        let agree = rows(&[
            ("www-backend", "www-1"),
            ("www-backend", "www-2"),
            ("www-backend", "BACKEND"),
            ("dynamic", "app1"),
            ("elsewhere", "x"),
        ]);
        assert_eq!(server_difference(CONFIG.as_bytes(), &agree), None);
        let behind = rows(&[("www-backend", "www-1"), ("www-backend", "www-7")]);
        assert_eq!(
            server_difference(CONFIG.as_bytes(), &behind).unwrap(),
            "it lacks www-2 and still runs www-7"
        );
    }

    #[test]
    fn the_record_sits_beside_the_live_config() {
        assert_eq!(
            record_path(Path::new("/etc/haproxy/haproxy.cfg")),
            Path::new("/etc/haproxy/haproxy.cfg.loaded")
        );
    }
}
