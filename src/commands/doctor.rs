//! `doctor`: check a setup before it is needed, one line per check, each
//! saying what to do when it fails. Changes nothing.

use std::fs;
use std::path::Path;

use anyhow::{Result, anyhow};
use serde::Serialize;

use super::{App, Report};
use crate::config::Config;
use crate::digitalocean::{ApiError, Client, reserved_ip};
use crate::digitalocean::{Image, SshKey};
use crate::haproxy::{self, Loaded};
use crate::inventory::{Store, StoreSettings};
use crate::model::Entry;

/// The API refuses larger user data.
const MAX_USER_DATA: u64 = 64 * 1024;

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Ok,
    Failed,
    /// Could not be checked because an earlier check failed, or not set up.
    Skipped,
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    status: Outcome,
    detail: String,
}

impl Check {
    fn line(&self) -> String {
        let mark = match self.status {
            Outcome::Ok => "✓",
            Outcome::Failed => "✗",
            Outcome::Skipped => "-",
        };
        format!("{mark} {}: {}", self.check, self.detail)
    }
}

fn ok(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: Outcome::Ok,
        detail: detail.into(),
    }
}

fn failed(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: Outcome::Failed,
        detail: detail.into(),
    }
}

fn skipped(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: Outcome::Skipped,
        detail: detail.into(),
    }
}

/// A config that did not load: doctor's first and only line.
pub fn config_failed(err: &anyhow::Error) -> Report {
    let check = failed("config", format!("{err:#}"));
    let report = Report::new(vec![check.line()], [&check]).expect("a check encodes as JSON");
    report.failed(anyhow!(
        "the config file cannot be used; fix it and run doproxy doctor again"
    ))
}

pub async fn run(app: &App) -> Result<Report> {
    let config = &app.config;
    let mut checks = vec![ok("config", format!("{} parses", config.path.display()))];
    checks.push(secrets_check(config));
    let inventory = app.store.load().await;
    checks.push(match &inventory {
        Ok(entries) => inventory_check(app, entries),
        Err(err) => failed("inventory", format!("{err:#}")),
    });
    let api = match app.api() {
        Ok(api) => match api.get_json("/v2/account", &[]).await {
            Ok(account) => {
                let email = account["account"]["email"].as_str().unwrap_or("unknown");
                checks.push(ok("token", format!("the API accepts it (account {email})")));
                Some(api)
            }
            Err(err) => {
                checks.push(failed("token", err.to_string()));
                None
            }
        },
        Err(err) => {
            checks.push(failed("token", format!("{err:#}")));
            None
        }
    };
    match api {
        Some(api) => checks.extend(account_checks(config, api).await),
        None => {
            let needs_token = |check| skipped(check, "needs a working token");
            checks.push(placeholder_check(config).unwrap_or_else(|| needs_token("ssh keys")));
            for check in ["region", "size", "image"] {
                checks.push(needs_token(check));
            }
        }
    }
    if let Some(ip) = config.failover.reserved_ip {
        checks.push(match api {
            Some(api) => reserved_ip_check(ip, api).await,
            None => skipped("reserved ip", "needs a working token"),
        });
    }
    checks.push(user_data_check(config));
    checks.push(folders_check(config));
    let entries = inventory.as_deref().unwrap_or_default();
    checks.push(template_check(config, app.frontend_bind().await, entries).await);
    checks.push(reload_check(config).await);
    checks.push(match haproxy::worker_pid(&config.haproxy).await {
        None => skipped(
            "admin socket",
            "haproxy_socket is not set; delete cannot drain and print --health has nothing to show",
        ),
        Some(Ok(pid)) => ok(
            "admin socket",
            format!(
                "HAProxy worker {pid} answers on {}",
                config
                    .haproxy
                    .socket
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            ),
        ),
        Some(Err(err)) => failed("admin socket", format!("{err:#}")),
    });
    checks.push(loaded_check(config).await);

    let text = checks.iter().map(Check::line).collect();
    let failures = checks
        .iter()
        .filter(|c| matches!(c.status, Outcome::Failed))
        .count();
    let report = Report::new(text, &checks)?;
    if failures == 0 {
        return Ok(report);
    }
    Ok(report.failed(anyhow!(
        "{failures} check(s) failed; fix what the ✗ lines say and run doproxy doctor again"
    )))
}

/// Where the inventory is (for etcd, the prefix) and how many droplets it
/// holds; in etcd, whether any is another pool's: a prefix two pools share
/// makes each route to the other's droplets.
fn inventory_check(app: &App, entries: &[Entry]) -> Check {
    const CHECK: &str = "inventory";
    let holds = format!(
        "{} holds {} droplet(s)",
        app.store.describe(),
        entries.len()
    );
    let pool = app.config.pool.clone();
    let others: Vec<&str> = entries
        .iter()
        .filter(|entry| !pool.owns(entry))
        .map(|entry| entry.name.as_str())
        .collect();
    if others.is_empty() || !matches!(app.store, Store::Etcd(_)) {
        return ok(CHECK, holds);
    }
    let named = match others.len() {
        1..=3 => others.join(", "),
        n => format!("{} and {} more", others[..3].join(", "), n - 3),
    };
    failed(
        CHECK,
        format!(
            "{holds}, {} of them not of pool {} ({named}), so this proxy routes to another pool's droplets; give each pool its own etcd_prefix (unset, it is /doproxy/<pool tag>/)",
            others.len(),
            pool.tag
        ),
    )
}

/// The reserved IP `failover` moves: that it exists, and who holds it.
async fn reserved_ip_check(ip: std::net::Ipv4Addr, api: &Client) -> Check {
    const CHECK: &str = "reserved ip";
    match reserved_ip::get(api, ip).await {
        Ok(reserved) => ok(
            CHECK,
            match reserved.droplet {
                Some(holder) => format!("{ip} is held by {} (droplet {})", holder.name, holder.id),
                None => format!(
                    "{ip} exists and no droplet holds it; doproxy failover assigns it to the leading proxy"
                ),
            },
        ),
        Err(ApiError::NotFound) => failed(
            CHECK,
            format!(
                "{ip} is not a reserved IP of this account; create one in the proxies' region and set reserved_ip to it"
            ),
        ),
        Err(err) => failed(CHECK, err.to_string()),
    }
}

/// ✗ while ssh_key_ids holds the placeholder `doproxy init` wrote.
fn placeholder_check(config: &Config) -> Option<Check> {
    let err = config.check_ssh_keys().err()?;
    Some(failed("ssh keys", err.to_string()))
}

/// SSH keys, region, size and image, as this account sees them.
async fn account_checks(config: &Config, api: &Client) -> Vec<Check> {
    let mut checks = vec![match placeholder_check(config) {
        Some(check) => check,
        None => ssh_keys_check(config, api).await,
    }];
    let slug_check = |check: &'static str, slug: Option<&str>, list: &str, found: Option<bool>| {
        match (slug, found) {
            (None, _) => failed(
                check,
                format!("droplet_options.{check} is missing; create needs it"),
            ),
            (Some(slug), Some(true)) => ok(check, format!("{slug} is available")),
            (Some(slug), Some(false)) => failed(
                check,
                format!(
                    "{slug} is not a {check} this account can use; pick one from `doctl compute {list} list`"
                ),
            ),
            (Some(_), None) => failed(check, "the API could not be asked; retry"),
        }
    };
    let region = config.droplets.region.as_deref();
    let size = config.droplets.size.as_deref();
    let listed = |key: &'static str, slug: Option<&str>| {
        let api = api.clone();
        let slug = slug.map(str::to_string);
        async move {
            let slug = slug?;
            let list = api
                .get_json(&format!("/v2/{key}"), &[("per_page", "200".to_string())])
                .await
                .ok()?;
            Some(
                list[key]
                    .as_array()?
                    .iter()
                    .any(|item| item["slug"] == slug.as_str() && item["available"] != false),
            )
        }
    };
    checks.push(slug_check(
        "region",
        region,
        "region",
        listed("regions", region).await,
    ));
    checks.push(slug_check(
        "size",
        size,
        "size",
        listed("sizes", size).await,
    ));
    let image = config.droplets.image.as_ref().map(Image::to_string);
    let image_found = match &image {
        Some(image) => match api.get_json(&format!("/v2/images/{image}"), &[]).await {
            Ok(_) => Some(true),
            Err(crate::digitalocean::ApiError::NotFound) => Some(false),
            Err(_) => None,
        },
        None => None,
    };
    checks.push(slug_check("image", image.as_deref(), "image", image_found));
    checks
}

/// That every key of ssh_key_ids exists in this account.
async fn ssh_keys_check(config: &Config, api: &Client) -> Check {
    let mut missing = Vec::new();
    for key in &config.droplets.ssh_keys {
        let id = match key {
            SshKey::Id(id) => id.to_string(),
            SshKey::Fingerprint(fingerprint) => fingerprint.clone(),
        };
        if api
            .get_json(&format!("/v2/account/keys/{id}"), &[])
            .await
            .is_err()
        {
            missing.push(id);
        }
    }
    match (config.droplets.ssh_keys.len(), missing.is_empty()) {
        (0, _) => skipped(
            "ssh keys",
            "ssh_key_ids is empty; new droplets get no SSH key",
        ),
        (n, true) => ok("ssh keys", format!("all {n} exist")),
        (_, false) => failed(
            "ssh keys",
            format!(
                "{} not found in this account; check ssh_key_ids against `doctl compute ssh-key list`",
                missing.join(", ")
            ),
        ),
    }
}

fn secrets_check(config: &Config) -> Check {
    if !config.secrets_in_file {
        return ok(
            "secrets",
            "no token or password in the config file (they come from the environment)",
        );
    }
    match config.exposed_secrets() {
        Ok(None) => ok(
            "secrets",
            format!(
                "{} holds a secret and only its owner can read it",
                config.path.display()
            ),
        ),
        Ok(Some(exposed)) => failed("secrets", exposed),
        Err(err) => failed(
            "secrets",
            format!(
                "cannot read the permissions of {}: {err}",
                config.path.display()
            ),
        ),
    }
}

fn user_data_check(config: &Config) -> Check {
    let Some(path) = &config.droplets.userdata_file else {
        return skipped(
            "user data",
            "userdata_file is not set; new droplets start without it",
        );
    };
    match fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(meta) if meta.len() <= MAX_USER_DATA => ok(
            "user data",
            format!("{} ({} bytes)", path.display(), meta.len()),
        ),
        Ok(meta) => failed(
            "user data",
            format!(
                "{} is {} bytes; DigitalOcean accepts at most 64 KiB, so shorten it",
                path.display(),
                meta.len()
            ),
        ),
        Err(err) => failed(
            "user data",
            format!("cannot read {}: {err}; fix userdata_file", path.display()),
        ),
    }
}

/// The folders doproxy writes into: its lock files and atomic replacements
/// (temporary file, then rename) need to create files there, so each is
/// tried with a file created and removed at once.
fn folders_check(config: &Config) -> Check {
    let mut folders: Vec<(&Path, &str)> = Vec::new();
    if matches!(config.store, StoreSettings::File(_)) {
        folders.push((parent(&config.inventory_file), "inventory_file"));
    }
    folders.push((parent(&config.haproxy.cfg_file), "haproxy_cfg_file"));
    folders.push((parent(&config.haproxy.cfg_path), "haproxy_cfg_path"));
    folders.dedup_by_key(|(folder, _)| *folder);
    let probe = format!(".doproxy-doctor-{}", std::process::id());
    let unwritable: Vec<String> = folders
        .iter()
        .filter_map(|(folder, key)| {
            let file = folder.join(&probe);
            let tried = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .and_then(|_| fs::remove_file(&file));
            tried
                .err()
                .map(|err| format!("{} (of {key}): {err}", folder.display()))
        })
        .collect();
    if unwritable.is_empty() {
        let keys: Vec<&str> = folders.iter().map(|(_, key)| *key).collect();
        return ok(
            "folders",
            format!("the folders of {} are writable", keys.join(", ")),
        );
    }
    failed(
        "folders",
        format!(
            "cannot create files in {}; doproxy keeps its lock files there and replaces files by renaming, so make the folder writable for the user running doproxy",
            unwritable.join("; ")
        ),
    )
}

/// The folder holding `file`.
fn parent(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new("/"))
}

/// Renders the template for the inventory's `entries` into a scratch file
/// and runs haproxy_check_command on it; the staged and live configs stay as
/// they are.
async fn template_check(config: &Config, frontend_bind: &str, entries: &[Entry]) -> Check {
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
async fn reload_check(config: &Config) -> Check {
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
async fn loaded_check(config: &Config) -> Check {
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

    #[test]
    fn lines_carry_their_mark() {
        assert_eq!(ok("token", "fine").line(), "✓ token: fine");
        assert_eq!(failed("size", "bad").line(), "✗ size: bad");
        assert_eq!(skipped("image", "later").line(), "- image: later");
    }
}
