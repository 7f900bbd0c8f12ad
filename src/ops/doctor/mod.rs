//! `doctor`'s checks: a setup checked before it is needed, each check one
//! line saying what to do when it fails. Changes nothing: files it must
//! try writing are removed at once, the reload command is looked at, not
//! run.

mod account_checks;
mod haproxy_checks;
mod tls_checks;

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::Context;
use crate::config::Config;
use crate::haproxy;
use crate::inventory::{Store, StoreSettings};
use crate::model::Entry;
use account_checks::{account_checks, placeholder_check, reserved_ip_check};
use haproxy_checks::{loaded_check, reload_check, template_check};

/// The API refuses larger user data.
const MAX_USER_DATA: u64 = 64 * 1024;

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Ok,
    Failed,
    /// Could not be checked because an earlier check failed, or not set up.
    Skipped,
    /// Worth a look, but no failure (a domain that does not resolve yet).
    Warning,
}

#[derive(Debug, Serialize)]
pub struct Check {
    check: &'static str,
    status: Outcome,
    detail: String,
}

impl Check {
    /// `✓ token: ...`, as people read it.
    pub fn line(&self) -> String {
        let mark = match self.status {
            Outcome::Ok => "✓",
            Outcome::Failed => "✗",
            Outcome::Skipped => "-",
            Outcome::Warning => "!",
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

fn warning(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: Outcome::Warning,
        detail: detail.into(),
    }
}

impl Check {
    pub fn is_failure(&self) -> bool {
        matches!(self.status, Outcome::Failed)
    }
}

/// A config that did not load: doctor's first and only check.
pub fn config_failed(err: &anyhow::Error) -> Check {
    failed("config", format!("{err:#}"))
}

/// Every check, in the order people read them; changes nothing.
pub async fn checks(ctx: &Context) -> Vec<Check> {
    let config = &ctx.config;
    let mut checks = vec![ok("config", format!("{} parses", config.path.display()))];
    checks.push(secrets_check(config));
    let inventory = ctx.store.load().await;
    checks.push(match &inventory {
        Ok(entries) => inventory_check(ctx, entries),
        Err(err) => failed("inventory", format!("{err:#}")),
    });
    let api = match ctx.api() {
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
    if let (Some(api), Ok(entries)) = (api, &inventory) {
        checks.push(account_checks::ownership_check(ctx, api, entries).await);
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
    checks.push(template_check(config, ctx.frontend_bind().await, entries).await);
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
    checks.extend(tls_checks::tls_checks(ctx).await);
    checks
}

/// Where the inventory is (for etcd, the prefix) and how many droplets it
/// holds; in etcd, whether any is another pool's: a prefix two pools share
/// makes each route to the other's droplets.
fn inventory_check(ctx: &Context, entries: &[Entry]) -> Check {
    const CHECK: &str = "inventory";
    let holds = format!(
        "{} holds {} droplet(s)",
        ctx.store.describe(),
        entries.len()
    );
    let pool = ctx.config.pool.clone();
    let others: Vec<&str> = entries
        .iter()
        .filter(|entry| !pool.owns(entry))
        .map(|entry| entry.name.as_str())
        .collect();
    if others.is_empty() || !matches!(ctx.store, Store::Etcd(_)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_mark() {
        assert_eq!(ok("token", "fine").line(), "✓ token: fine");
        assert_eq!(failed("size", "bad").line(), "✗ size: bad");
        assert_eq!(skipped("image", "later").line(), "- image: later");
        assert_eq!(warning("dns", "not yet").line(), "! dns: not yet");
        assert!(!warning("dns", "not yet").is_failure());
    }
}
