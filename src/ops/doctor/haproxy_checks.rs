//! The checks of HAProxy's side: the template renders and passes the
//! check command, the reload command can work here, and HAProxy runs the
//! live config.

use std::fs;
use std::path::Path;

use super::{Check, failed, ok, skipped};
use crate::config::Config;
use crate::haproxy::{self, Loaded};
use crate::model::Entry;

/// Renders the template for the inventory's `entries` into a scratch file
/// and runs haproxy_check_command on it; the staged and live configs stay as
/// they are.
pub(super) async fn template_check(
    config: &Config,
    frontend_bind: &str,
    entries: &[Entry],
) -> Check {
    if let Some(tls) = &config.haproxy.tls
        && !(tls.certificate_file.exists() && tls.challenge_map.exists())
    {
        return skipped(
            "template",
            format!(
                "the config serves HTTPS from {} and answers ACME challenges from {}, not there yet; doproxy reload writes them (a self-signed stand-in until the first certificate)",
                tls.certificate_file.display(),
                tls.challenge_map.display()
            ),
        );
    }
    let (text, servers) = match haproxy::render_config(&config.haproxy, frontend_bind, entries) {
        Ok(rendered) => rendered,
        Err(err) => return failed("template", format!("{err:#}")),
    };
    let scratch = std::env::temp_dir().join(format!("doproxy-doctor-{}.cfg", std::process::id()));
    let checked = match fs::write(&scratch, text) {
        Ok(()) => haproxy::check_file(&config.haproxy, &scratch).await,
        Err(err) => Err(err.into()),
    };
    let _ = fs::remove_file(&scratch);
    match checked {
        Ok(()) => ok(
            "template",
            format!("renders {servers} server(s) and passes haproxy_check_command"),
        ),
        Err(err) => failed(
            "template",
            format!("the rendered config fails the check: {err:#}"),
        ),
    }
}

/// One `||` alternative of the reload command, as doctor judges it.
#[derive(Debug, PartialEq, Eq)]
struct Alternative {
    /// The alternative as written.
    text: String,
    /// The program it starts.
    program: String,
    /// It goes through systemd.
    systemctl: bool,
}

/// The `||` alternatives of a shell command, each with its program.
fn alternatives(command: &str) -> Vec<Alternative> {
    command
        .split("||")
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| Alternative {
            text: text.to_string(),
            program: text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(['\'', '"'])
                .to_string(),
            systemctl: text.split_whitespace().any(|word| word == "systemctl"),
        })
        .collect()
}

/// Whether one of the alternatives can work: its program exists (`found`)
/// and, for systemctl, systemd runs (`systemd`).
fn judge_reload(alternatives: &[Alternative], found: &[bool], systemd: bool) -> Check {
    let problem = |alternative: &Alternative, found: bool| match (found, alternative.systemctl) {
        (false, _) => Some(format!("{} is not found", alternative.program)),
        (true, true) if !systemd => Some(format!(
            "`{}` needs systemd, which is not running here (no /run/systemd/system)",
            alternative.text
        )),
        (true, _) => None,
    };
    let problems: Vec<Option<String>> = alternatives
        .iter()
        .zip(found)
        .map(|(alternative, &found)| problem(alternative, found))
        .collect();
    let all_problems = || {
        problems
            .iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    };
    match problems.iter().position(Option::is_none) {
        Some(0) => ok(
            "reload command",
            format!("{} is available", alternatives[0].program),
        ),
        Some(usable) => ok(
            "reload command",
            format!(
                "{}, so `{}` does the reload",
                problems[0].as_deref().unwrap_or_default(),
                alternatives[usable].text
            ),
        ),
        None if alternatives.iter().any(|a| a.systemctl) && !systemd => failed(
            "reload command",
            format!(
                "{}; without systemd set haproxy_reload_command to `service haproxy reload`, or to `kill -USR2 $(cat /run/haproxy.pid)` for a master-worker HAProxy",
                all_problems()
            ),
        ),
        None => failed(
            "reload command",
            format!("{}; fix haproxy_reload_command", all_problems()),
        ),
    }
}

/// The reload command's programs exist, and systemd runs if it goes through
/// systemctl (the command itself is not run: that would reload).
pub(super) async fn reload_check(config: &Config) -> Check {
    let alternatives = alternatives(&config.haproxy.reload_command);
    let mut found = Vec::new();
    for alternative in &alternatives {
        let exists = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"command -v "$1""#)
            .arg("sh")
            .arg(&alternative.program)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .is_ok_and(|out| out.status.success());
        found.push(exists);
    }
    let systemd = Path::new("/run/systemd/system").exists();
    judge_reload(&alternatives, &found, systemd)
}

/// The live config is the one HAProxy runs (a run cut short between
/// installing and reloading leaves it unloaded).
pub(super) async fn loaded_check(config: &Config) -> Check {
    let live = config.haproxy.cfg_path.display();
    match haproxy::loaded(&config.haproxy).await {
        None => skipped(
            "live config",
            format!("{live} is not installed yet; doproxy reload installs it"),
        ),
        Some(Loaded::Yes) => ok("live config", format!("HAProxy has loaded {live}")),
        Some(Loaded::No(reason)) => failed("live config", format!("{reason}; run doproxy reload")),
        Some(Loaded::Unknown(reason)) => skipped("live config", reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_alternatives_are_judged_in_order() {
        let default = alternatives("systemctl reload haproxy || service haproxy reload");
        assert_eq!(default.len(), 2);
        assert_eq!(
            (default[1].program.as_str(), default[1].systemctl),
            ("service", false)
        );
        assert!(default[0].systemctl);
        let with_systemd = judge_reload(&default, &[true, true], true);
        assert_eq!(
            with_systemd.line(),
            "✓ reload command: systemctl is available"
        );
        let fallback = judge_reload(&default, &[true, true], false).line();
        assert!(
            fallback.starts_with("✓ ")
                && fallback.ends_with("so `service haproxy reload` does the reload"),
            "{fallback}"
        );
        let only_systemctl = alternatives("systemctl reload haproxy");
        let line = judge_reload(&only_systemctl, &[true], false).line();
        assert!(
            line.starts_with("✗ reload command: `systemctl reload haproxy` needs systemd")
                && line.contains("service haproxy reload"),
            "{line}"
        );
        let missing = alternatives("'/opt/bin/reload-it' now");
        assert_eq!(missing[0].program, "/opt/bin/reload-it");
        assert_eq!(
            judge_reload(&missing, &[false], true).line(),
            "✗ reload command: /opt/bin/reload-it is not found; fix haproxy_reload_command"
        );
    }
}
