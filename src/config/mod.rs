//! doproxy.yml: the original DOProxy keys, the new ones, and where files live.
//!
//! Like ripgrep's flags, in two steps: `file` is the file as written, and
//! `Config::parse` checks it once and builds the settings each layer takes
//! (`haproxy::Settings`, `inventory::StoreSettings`, `metrics::Settings`,
//! `digitalocean::ApiSettings`, the policies of `scaling`, ...), so no layer
//! below reads doproxy.yml or sees more of it than its own part.
//!
//! Every relative path resolves against the folder holding the config file, so a
//! cron job started in `/` finds the same files as a shell in that folder. The
//! token may come from the environment instead of the file, and is kept in a type
//! that never prints it.

mod checks;
mod droplets;
mod file;
mod notify;
mod policies;
#[cfg(test)]
mod tests;
mod tls;
mod yaml_error;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::digitalocean::{ApiSettings, RetryPolicy, SshKey, Token};
use crate::haproxy;
use crate::inventory::{EtcdSettings, StoreSettings};
use crate::model::{HealthCheck, Pool, SHARED_TAG};
use crate::scaling::autoscale::Policy;
use crate::scaling::heal::Policy as HealPolicy;
use crate::{etcd, metrics};
use checks::{binds_loopback_only, in_clear};
pub use droplets::{DropletSettings, DropletSpec};
use file::ConfigFile;
pub use tls::{CertificateSource, TlsSettings};

/// Where the config file is looked for when neither --config nor
/// $DOPROXY_CONFIG names one.
const DEFAULT_CONFIG: &str = "doproxy.yml";
const TOKEN_ENV: [&str; 2] = ["DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN"];
const API_URL_ENV: &str = "DIGITALOCEAN_API_URL";
const ETCD_PASSWORD_ENV: &str = "DOPROXY_ETCD_PASSWORD";
/// What `doproxy init` writes into ssh_key_ids (from doproxy.yml.example):
/// clearly no key, so a new setup never looks finished with someone else's.
pub const SSH_KEY_PLACEHOLDER: &str = "your-ssh-key-id";

/// The settings every command works from, with defaults filled in, paths
/// made absolute, and each layer's part in a type of that layer.
#[derive(Debug)]
pub struct Config {
    /// The file, for messages.
    pub path: PathBuf,
    token: Option<Token>,
    /// Where the API is and how long a request is retried.
    pub api: ApiSettings,
    /// What new droplets are made from.
    pub droplets: DropletSettings,
    /// The pool, as its droplets show it (its tag is the first of
    /// `droplets.tags`).
    pub pool: Pool,
    /// Where the inventory lives.
    pub store: StoreSettings,
    /// inventory_file: the file store, and beside it the lock files of
    /// commands that run one at a time, whichever store holds the inventory.
    pub inventory_file: PathBuf,
    pub haproxy: haproxy::Settings,
    /// frontend_bind; None: this droplet's addresses, from the metadata
    /// service.
    pub frontend_bind: Option<String>,
    /// The droplet metadata service, without a trailing `/`.
    pub metadata_url: String,
    /// What says a droplet serves, and how long `create` waits for it.
    pub health_check: HealthCheck,
    /// The `autoscale:` section, validated.
    pub autoscale: Option<Policy>,
    /// The reserved IP `failover` moves, and its timings.
    pub failover: FailoverSettings,
    /// The `heal:` section, validated; its presence also turns healing on
    /// in the autoscale loop.
    pub heal: Option<HealPolicy>,
    /// The file itself holds a secret (token, etcd password, webhook URLs),
    /// so it must not be readable by others.
    pub secrets_in_file: bool,
    /// Webhooks told of events.
    pub notify: Vec<crate::notify::Hook>,
    /// Where doproxy's own metrics go.
    pub metrics: metrics::Settings,
    /// `create` and `scale` making more droplets than this in one run ask
    /// first on a terminal, and need --yes elsewhere.
    pub confirm_creates_above: usize,
    /// The `tls:` section, validated; None: plain HTTP only.
    pub tls: Option<TlsSettings>,
}

/// `doproxy failover`: the reserved IP and how leadership is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSettings {
    pub reserved_ip: Option<Ipv4Addr>,
    /// The leader's etcd lease: how long a leader that died or was cut off
    /// from etcd keeps the others waiting.
    pub lease_ttl: Duration,
    /// How often each proxy checks its own HAProxy and the leader key.
    pub check_interval: Duration,
    /// How often the leader reads the reserved IP back from the API.
    pub recheck_interval: Duration,
    /// How long a proxy that gave leadership up waits before it claims it
    /// again, so a HAProxy failing on and off cannot bounce the IP.
    pub min_hold: Duration,
}

/// The longest wait doproxy accepts: far beyond any real one, and far from
/// where adding it to the clock could overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration as users write it, `90s`, `10m`, `1h 30m`, for the config
/// file and the command line alike; refused beyond ten years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration > MAX_DURATION {
        return Err("longer than 10 years, the most doproxy waits for anything".to_string());
    }
    Ok(duration)
}

/// Reads values of the config file at `path` whose errors name it.
struct Values<'a> {
    path: &'a Path,
}

impl Values<'_> {
    /// `key`'s duration, `default_secs` when unset.
    fn duration(&self, key: &str, text: Option<String>, default_secs: u64) -> Result<Duration> {
        match text {
            None => Ok(Duration::from_secs(default_secs)),
            Some(text) => parse_duration(&text).map_err(|err| {
                anyhow::anyhow!(
                    "{key} {text:?} in {} is not a duration ({err}); write it like 90s or 2m",
                    self.path.display()
                )
            }),
        }
    }

    /// A bound that must not be zero: it would fail every command at once.
    fn positive(&self, key: &str, text: Option<String>, default_secs: u64) -> Result<Duration> {
        let bound = self.duration(key, text, default_secs)?;
        if bound.is_zero() {
            bail!(
                "{key} in {} must be longer than 0s; write it like 30s",
                self.path.display()
            );
        }
        Ok(bound)
    }

    /// `path` made absolute against the config file's folder.
    fn resolve(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            return path;
        }
        self.path.parent().unwrap_or(Path::new("/")).join(path)
    }
}

impl Config {
    /// Finds and reads the config file: `explicit` (from --config or
    /// $DOPROXY_CONFIG, which clap merges), else ./doproxy.yml.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG));
        let bytes = std::fs::read(path).map_err(|err| {
            let hint = if explicit.is_none() {
                "; run doproxy in the folder that holds doproxy.yml, or pass --config PATH"
            } else {
                "; check the path given with --config or $DOPROXY_CONFIG"
            };
            anyhow::anyhow!("cannot read config file {}: {err}{hint}", path.display())
        })?;
        let text = crate::text::utf8(bytes).map_err(|err| {
            anyhow::anyhow!(
                "config file {} {err}; retype that line or save the file as UTF-8, then retry",
                path.display()
            )
        })?;
        let absolute = std::path::absolute(path)
            .with_context(|| format!("cannot resolve the path {}", path.display()))?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Config::parse(&text, &absolute, env)
    }

    /// Builds the config from the file's text; `env` looks up environment
    /// variables (a parameter so tests need not touch the process environment).
    fn parse(text: &str, path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|err| {
                anyhow::anyhow!(
                    "config file {} is invalid: {}; fix that key and retry",
                    path.display(),
                    yaml_error::explain(&err.to_string(), text)
                )
            })?
        };
        let values = Values { path };
        // A webhook's URL may hold its secret (Slack's do).
        let secrets_in_file =
            file.token.is_some() || file.etcd_password.is_some() || !file.notify.is_empty();
        let token = TOKEN_ENV
            .iter()
            .find_map(|name| env(name))
            .or(file.token.filter(|t| !t.trim().is_empty()))
            .map(|t| Token::new(t.trim().to_string()));
        let api_url = env(API_URL_ENV)
            .or(file.api_url)
            .unwrap_or_else(|| "https://api.digitalocean.com".to_string());
        let explicit_tags = file.droplet_options.tags.is_some();
        let droplets = DropletSettings::new(
            file.droplet_options,
            file.ssh_key_ids,
            file.userdata_file.map(|p| values.resolve(p)),
            file.pool.as_deref(),
            path,
        )?;
        let pool = Pool {
            tag: droplets.tags[0].clone(),
            hostname_prefix: droplets.hostname_prefix.clone(),
        };
        for (key, port) in [
            ("backend_port", file.backend_port),
            ("health_check_port", file.health_check_port),
        ] {
            if port == Some(0) {
                bail!(
                    "{key} in {} is 0, which is no port; write the port the droplets serve on, e.g. {key}: 80",
                    path.display()
                );
            }
        }
        let inventory_file = values.resolve(file.inventory_file.unwrap_or("inventory".into()));
        // In the order the keys were always checked, so the first error of
        // a file with several stays the one reported.
        let check_timeout =
            values.positive("haproxy_check_timeout", file.haproxy_check_timeout, 60)?;
        let reload_timeout =
            values.positive("haproxy_reload_timeout", file.haproxy_reload_timeout, 60)?;
        let socket_timeout =
            values.positive("haproxy_socket_timeout", file.haproxy_socket_timeout, 5)?;
        let api = ApiSettings {
            url: api_url.trim_end_matches('/').to_string(),
            retry: RetryPolicy {
                budget: values.duration("api_retry_budget", file.api_retry_budget, 120)?,
            },
        };
        let health_check = HealthCheck {
            path: file.health_check_path.unwrap_or_else(|| "/".to_string()),
            port: file.health_check_port.or(file.backend_port).unwrap_or(80),
            status: file.health_check_status.unwrap_or(200),
            ready_timeout: values.duration("ready_timeout", file.ready_timeout, 300)?,
        };
        let cfg_path = values.resolve(
            file.haproxy_cfg_path
                .unwrap_or("/etc/haproxy/haproxy.cfg".into()),
        );
        let (tls, haproxy_tls) = match file.tls {
            Some(section) => {
                let (tls, template) =
                    tls::tls_settings(section, &values, &cfg_path).map_err(|err| {
                        anyhow::anyhow!("the tls section of {} is invalid: {err}", path.display())
                    })?;
                (Some(tls), Some(template))
            }
            None => (None, None),
        };
        let haproxy = haproxy::Settings {
            cfg_file: values.resolve(file.haproxy_cfg_file.unwrap_or("haproxy.cfg".into())),
            cfg_path,
            template_file: file.haproxy_template_file.map(|p| values.resolve(p)),
            backend_port: file.backend_port.unwrap_or(80),
            check_command: file
                .haproxy_check_command
                .unwrap_or_else(|| "haproxy -c -f {file}".to_string()),
            reload_command: file.haproxy_reload_command.unwrap_or_else(|| {
                "systemctl reload haproxy || service haproxy reload".to_string()
            }),
            socket: file.haproxy_socket.map(|p| values.resolve(p)),
            check_timeout,
            reload_timeout,
            socket_timeout,
            runtime_updates: file.haproxy_runtime_updates.unwrap_or(true),
            stats_bind: file.haproxy_stats_bind,
            health_check: health_check.clone(),
            tls: haproxy_tls,
        };
        let failover = FailoverSettings {
            reserved_ip: file.reserved_ip,
            lease_ttl: values.positive("failover_lease_ttl", file.failover_lease_ttl, 10)?,
            check_interval: values.positive(
                "failover_check_interval",
                file.failover_check_interval,
                1,
            )?,
            recheck_interval: values.positive(
                "failover_recheck_interval",
                file.failover_recheck_interval,
                30,
            )?,
            min_hold: values.duration("failover_min_hold", file.failover_min_hold, 30)?,
        };
        // Each pool's inventory lives under a prefix named by its tag (tags
        // hold no `/`, so no pool's keys fall under another's). Before, a
        // pool without explicit tags used the shared /doproxy/doproxy/; its
        // droplets still there are to be moved (see shared_prefix).
        let shared_prefix = format!("/doproxy/{SHARED_TAG}/");
        let own_prefix = format!("/doproxy/{}/", pool.tag);
        let moved_away =
            file.etcd_prefix.is_none() && !explicit_tags && own_prefix != shared_prefix;
        let store = match file.inventory_backend.as_deref() {
            None | Some("file") => StoreSettings::File(inventory_file.clone()),
            Some("etcd") => StoreSettings::Etcd(Box::new(EtcdSettings {
                client: etcd::Settings {
                    endpoints: file.etcd_endpoints.filter(|e| !e.is_empty()).with_context(|| {
                        format!(
                            "inventory_backend is etcd but etcd_endpoints is missing in {}; list your etcd client URLs, e.g. [http://10.0.0.2:2379]",
                            path.display()
                        )
                    })?,
                    username: file.etcd_username,
                    password: env(ETCD_PASSWORD_ENV).or(file.etcd_password),
                    ca_file: file.etcd_ca_file.map(|p| values.resolve(p)),
                    cert_file: file.etcd_cert_file.map(|p| values.resolve(p)),
                    key_file: file.etcd_key_file.map(|p| values.resolve(p)),
                },
                prefix: file.etcd_prefix.unwrap_or(own_prefix),
                pool: pool.clone(),
                shared_prefix: moved_away.then_some(shared_prefix),
            })),
            Some(other) => bail!(
                "inventory_backend {other:?} in {} is unknown; use file (the default) or etcd",
                path.display()
            ),
        };
        let autoscale = file
            .autoscale
            .map(|section| policies::autoscale_policy(section, &values))
            .transpose()
            .map_err(|err| {
                anyhow::anyhow!(
                    "the autoscale section of {} is invalid: {err}",
                    path.display()
                )
            })?;
        // etcd counts leases in whole seconds, and renews them every third.
        if failover.lease_ttl < Duration::from_secs(3) {
            bail!(
                "failover_lease_ttl in {} must be at least 3s; write it like 10s",
                path.display()
            );
        }
        let heal = file
            .heal
            .map(|section| policies::heal_policy(section, &values))
            .transpose()
            .map_err(|err| {
                anyhow::anyhow!("the heal section of {} is invalid: {err}", path.display())
            })?;
        let notify = notify::hooks(
            file.notify,
            &values,
            file.allow_insecure_http.unwrap_or(false),
        )?;
        let config = Config {
            notify,
            path: path.to_path_buf(),
            token,
            api,
            droplets,
            pool,
            store,
            inventory_file,
            haproxy,
            frontend_bind: file.frontend_bind,
            metadata_url: file
                .metadata_url
                .unwrap_or_else(|| "http://169.254.169.254".to_string())
                .trim_end_matches('/')
                .to_string(),
            health_check,
            autoscale,
            failover,
            heal,
            secrets_in_file,
            metrics: metrics::Settings {
                listen: file.metrics_listen,
                allow_remote: file.metrics_allow_remote.unwrap_or(false),
                textfile: file.metrics_textfile.map(|p| values.resolve(p)),
            },
            confirm_creates_above: file.confirm_creates_above.unwrap_or(10),
            tls,
        };
        config.check(file.allow_insecure_http.unwrap_or(false), &env)?;
        Ok(config)
    }

    /// What must hold across keys: values the HAProxy config prints stay on
    /// their line, listeners without authentication stay on this machine,
    /// secrets do not cross the network in clear (unless `insecure_http`),
    /// and the template is one doproxy can render.
    fn check(&self, insecure_http: bool, env: &impl Fn(&str) -> Option<String>) -> Result<()> {
        let file_name = self.path.display();
        let health_path = &self.health_check.path;
        if !health_path.starts_with('/') {
            bail!(
                "health_check_path {health_path:?} in {file_name} must start with /; write it like /healthz"
            );
        }
        let socket = self
            .haproxy
            .socket
            .as_ref()
            .map(|socket| socket.display().to_string());
        for (key, value) in [
            ("frontend_bind", self.frontend_bind.as_deref()),
            ("haproxy_stats_bind", self.haproxy.stats_bind.as_deref()),
            ("haproxy_socket", socket.as_deref()),
            ("health_check_path", Some(health_path.as_str())),
        ] {
            if let Some(value) = value
                && value.chars().any(char::is_control)
            {
                bail!(
                    "{key} {value:?} in {file_name} holds a line break or another control character, which would end its line in the HAProxy config; write it on one line"
                );
            }
        }
        if health_path.contains(char::is_whitespace) {
            bail!(
                "health_check_path {health_path:?} in {file_name} holds a space, which HAProxy's health check cannot send; encode it as %20"
            );
        }
        if let Some(bind) = &self.haproxy.stats_bind {
            metrics::check_unauthenticated_listener(
                "haproxy_stats_bind",
                bind,
                binds_loopback_only(bind),
                self.metrics.allow_remote,
            )?;
        }
        if !insecure_http {
            let api_url_key = if env(API_URL_ENV).is_some() {
                "$DIGITALOCEAN_API_URL"
            } else {
                "api_url"
            };
            if self.token.is_some() && in_clear(&self.api.url) {
                bail!(
                    "{api_url_key} {} is plain http:// to another machine, so the API token would cross the network unencrypted; use https://, or set allow_insecure_http: true in {file_name} if nobody else can see that network",
                    self.api.url
                );
            }
            if let StoreSettings::Etcd(etcd) = &self.store
                && (etcd.client.username.is_some() || etcd.client.password.is_some())
                && let Some(endpoint) = etcd.client.endpoints.iter().find(|e| in_clear(e))
            {
                bail!(
                    "etcd endpoint {endpoint} is plain http:// to another machine, so etcd_username and etcd_password would cross the network unencrypted; use https:// (with etcd_ca_file), or set allow_insecure_http: true in {file_name} if nobody else can see that network"
                );
            }
        }
        if let Some(template) = &self.haproxy.template_file
            && template.extension().is_some_and(|ext| ext == "erb")
        {
            bail!(
                "haproxy_template_file {} is a Ruby ERB template, which doproxy cannot render; remove the key to use the built-in template, or point it at a Tera template (see templates/haproxy.cfg.tera)",
                template.display()
            );
        }
        Ok(())
    }

    /// The token, or an error saying where to put one.
    pub fn token(&self) -> Result<&Token> {
        self.token.as_ref().with_context(|| {
            format!(
                "no DigitalOcean API token: set DIGITALOCEAN_ACCESS_TOKEN, or the token key in {}",
                self.path.display()
            )
        })
    }

    /// The droplet settings `create` needs, or an error naming the missing key.
    pub fn droplet_spec(&self) -> Result<DropletSpec<'_>> {
        let missing = |key: &str, example: &str| {
            anyhow::anyhow!(
                "droplet_options.{key} is missing in {}; add it (for example {key}: {example})",
                self.path.display()
            )
        };
        let droplets = &self.droplets;
        Ok(DropletSpec {
            hostname_prefix: droplets
                .hostname_prefix
                .as_deref()
                .ok_or_else(|| missing("hostname_prefix", "auto-nginx"))?,
            region: droplets
                .region
                .as_deref()
                .ok_or_else(|| missing("region", "nyc3"))?,
            size: droplets
                .size
                .as_deref()
                .ok_or_else(|| missing("size", "s-1vcpu-1gb"))?,
            image: droplets
                .image
                .as_ref()
                .ok_or_else(|| missing("image", "ubuntu-24-04-x64"))?,
        })
    }

    /// Fails while ssh_key_ids holds the placeholder `doproxy init` wrote,
    /// which DigitalOcean refuses only once everything else is done.
    pub fn check_ssh_keys(&self) -> Result<()> {
        let placeholder = SshKey::Fingerprint(SSH_KEY_PLACEHOLDER.to_string());
        if self.droplets.ssh_keys.contains(&placeholder) {
            bail!(
                "ssh_key_ids in {} holds the placeholder {SSH_KEY_PLACEHOLDER} that doproxy init wrote, which DigitalOcean refuses; put your SSH key's ID or fingerprint in ssh_key_ids instead (doctl compute ssh-key list)",
                self.path.display()
            );
        }
        Ok(())
    }

    /// The tag that marks the droplets of this pool: the first of the tags
    /// new droplets get, `doproxy:<pool>` by default.
    pub fn pool_tag(&self) -> &str {
        &self.pool.tag
    }

    /// What to tell the user when the config file holds a secret (token or
    /// etcd password) that others than its owner may read; None when it
    /// holds none, or only its owner can read it.
    pub fn exposed_secrets(&self) -> std::io::Result<Option<String>> {
        if !self.secrets_in_file {
            return Ok(None);
        }
        let mode = std::fs::metadata(&self.path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then(|| {
            format!(
                "{} holds a secret but its mode is {mode:o}, so others can read it; run chmod 600 on it, or move the token to $DIGITALOCEAN_ACCESS_TOKEN and the etcd password to $DOPROXY_ETCD_PASSWORD",
                self.path.display()
            )
        }))
    }
}
