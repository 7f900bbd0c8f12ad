//! doproxy.yml: the original DOProxy keys, the new ones, and where files live.
//!
//! Every relative path resolves against the folder holding the config file, so a
//! cron job started in `/` finds the same files as a shell in that folder. The
//! token may come from the environment instead of the file, and is kept in a type
//! that never prints it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::digitalocean::{Image, SshKey, Token};
use crate::etcd;
use crate::metrics;
use crate::model::{Pool, SHARED_TAG};
use crate::scaling::autoscale::{Metric, Policy, metric_name};
use crate::scaling::heal::Policy as HealPolicy;

mod yaml_error;

/// Where the config file is looked for when neither --config nor
/// $DOPROXY_CONFIG names one.
const DEFAULT_CONFIG: &str = "doproxy.yml";
const TOKEN_ENV: [&str; 2] = ["DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN"];
const API_URL_ENV: &str = "DIGITALOCEAN_API_URL";
const ETCD_PASSWORD_ENV: &str = "DOPROXY_ETCD_PASSWORD";
/// A pool's own tag is `doproxy:<pool>`.
const POOL_TAG_PREFIX: &str = "doproxy:";
/// What `doproxy init` writes into ssh_key_ids (from doproxy.yml.example):
/// clearly no key, so a new setup never looks finished with someone else's.
pub const SSH_KEY_PLACEHOLDER: &str = "your-ssh-key-id";
/// The API's limit on a tag's length.
const MAX_TAG_LEN: usize = 255;

/// The file as written by the user. Unknown keys are refused so that a typo
/// (`haproxy_cfg_pth`) is an error instead of a silently ignored setting.
/// No Debug: it holds the token and the etcd password in the clear.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    token: Option<String>,
    #[serde(default)]
    ssh_key_ids: Vec<SshKey>,
    userdata_file: Option<PathBuf>,
    haproxy_cfg_file: Option<PathBuf>,
    haproxy_cfg_path: Option<PathBuf>,
    haproxy_template_file: Option<PathBuf>,
    inventory_file: Option<PathBuf>,
    pool: Option<String>,
    #[serde(default)]
    droplet_options: DropletOptions,
    api_url: Option<String>,
    metadata_url: Option<String>,
    frontend_bind: Option<String>,
    backend_port: Option<u16>,
    haproxy_check_command: Option<String>,
    haproxy_reload_command: Option<String>,
    haproxy_socket: Option<PathBuf>,
    haproxy_check_timeout: Option<String>,
    haproxy_reload_timeout: Option<String>,
    haproxy_socket_timeout: Option<String>,
    api_retry_budget: Option<String>,
    health_check_path: Option<String>,
    health_check_port: Option<u16>,
    health_check_status: Option<u16>,
    ready_timeout: Option<String>,
    inventory_backend: Option<String>,
    etcd_endpoints: Option<Vec<String>>,
    etcd_prefix: Option<String>,
    etcd_username: Option<String>,
    etcd_password: Option<String>,
    etcd_ca_file: Option<PathBuf>,
    etcd_cert_file: Option<PathBuf>,
    etcd_key_file: Option<PathBuf>,
    autoscale: Option<AutoscaleFile>,
    haproxy_runtime_updates: Option<bool>,
    haproxy_stats_bind: Option<String>,
    metrics_listen: Option<SocketAddr>,
    metrics_allow_remote: Option<bool>,
    metrics_textfile: Option<PathBuf>,
    allow_insecure_http: Option<bool>,
    reserved_ip: Option<std::net::Ipv4Addr>,
    failover_lease_ttl: Option<String>,
    failover_check_interval: Option<String>,
    failover_recheck_interval: Option<String>,
    failover_min_hold: Option<String>,
    heal: Option<HealFile>,
    confirm_creates_above: Option<usize>,
}

/// The `heal:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealFile {
    grace: Option<String>,
    max_share_per_hour: Option<u8>,
    outage_share: Option<u8>,
    interval: Option<String>,
}

/// The `autoscale:` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoscaleFile {
    min: Option<usize>,
    max: Option<usize>,
    sessions_per_server: Option<f64>,
    request_rate_per_server: Option<f64>,
    queued_per_server: Option<f64>,
    cpu_percent: Option<f64>,
    cooldown: Option<String>,
    scale_in_step: Option<usize>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropletOptions {
    pub hostname_prefix: Option<String>,
    pub region: Option<String>,
    pub size: Option<String>,
    pub image: Option<Image>,
    pub tags: Option<Vec<String>>,
    pub vpc_uuid: Option<String>,
    pub ipv6: Option<bool>,
    pub backups: Option<bool>,
    pub monitoring: Option<bool>,
    pub with_droplet_agent: Option<bool>,
    pub project_id: Option<String>,
}

/// What new droplets get beyond the original four options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropletFeatures {
    /// None: the region's default VPC.
    pub vpc_uuid: Option<String>,
    pub ipv6: bool,
    pub backups: bool,
    /// The DigitalOcean agent for Monitoring (CPU for autoscale); on by default.
    pub monitoring: bool,
    /// None: DigitalOcean's default (installed where the image supports it).
    pub with_droplet_agent: Option<bool>,
    /// The project new droplets are assigned to; None: the default project.
    pub project_id: Option<String>,
}

/// The settings every command works from, with defaults filled in and paths
/// made absolute.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    token: Option<Token>,
    pub ssh_keys: Vec<SshKey>,
    pub userdata_file: Option<PathBuf>,
    pub haproxy_cfg_file: PathBuf,
    pub haproxy_cfg_path: PathBuf,
    pub haproxy_template_file: Option<PathBuf>,
    pub inventory_file: PathBuf,
    pub hostname_prefix: Option<String>,
    pub region: Option<String>,
    pub size: Option<String>,
    pub image: Option<Image>,
    pub tags: Vec<String>,
    pub droplet_features: DropletFeatures,
    pub api_url: String,
    pub metadata_url: String,
    pub frontend_bind: Option<String>,
    pub backend_port: u16,
    pub haproxy_check_command: String,
    pub haproxy_reload_command: String,
    pub haproxy_socket: Option<PathBuf>,
    /// How long haproxy_check_command may run before it is killed.
    pub haproxy_check_timeout: Duration,
    /// How long haproxy_reload_command may run before it is killed, and then
    /// how long the new worker may take to answer on haproxy_socket.
    pub haproxy_reload_timeout: Duration,
    /// How long one exchange on haproxy_socket may take.
    pub haproxy_socket_timeout: Duration,
    /// How long one API request may keep being retried.
    pub api_retry_budget: Duration,
    pub health_check: HealthCheck,
    /// Set when the inventory lives in etcd (inventory_backend: etcd).
    pub etcd: Option<EtcdSettings>,
    /// The `autoscale:` section, validated.
    pub autoscale: Option<Policy>,
    /// The reserved IP `failover` moves, and its timings.
    pub failover: FailoverSettings,
    /// The `heal:` section, validated; its presence also turns healing on
    /// in the autoscale loop.
    pub heal: Option<HealPolicy>,
    /// The file itself holds a secret (token or etcd password), so it must
    /// not be readable by others.
    pub secrets_in_file: bool,
    /// With haproxy_socket: servers are added and removed through HAProxy's
    /// runtime API instead of a reload.
    pub haproxy_runtime_updates: bool,
    /// Where the built-in template serves HAProxy's own stats page and
    /// Prometheus exporter; None: nowhere. Loopback unless
    /// metrics_allow_remote.
    pub haproxy_stats_bind: Option<String>,
    /// Where doproxy's own metrics go.
    pub metrics: metrics::Settings,
    /// `create` and `scale` making more droplets than this in one run ask
    /// first on a terminal, and need --yes elsewhere.
    pub confirm_creates_above: usize,
}

/// Where the inventory lives in etcd and how to reach it.
pub struct EtcdSettings {
    /// How to reach etcd.
    pub client: etcd::Settings,
    /// Every key of this pool starts with it, e.g. `/doproxy/doproxy:web/`.
    pub prefix: String,
    /// The pool whose inventory this is.
    pub pool: Pool,
    /// The prefix pools shared before each had its own by default
    /// (`/doproxy/doproxy/`), when this pool's default moved away from it:
    /// droplets of the pool still there have to be moved first.
    pub shared_prefix: Option<String>,
}

impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.client.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.client.username)
            .field(
                "password",
                &self.client.password.as_ref().map(|_| "<hidden>"),
            )
            .finish_non_exhaustive()
    }
}

/// `doproxy failover`: the reserved IP and how leadership is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSettings {
    pub reserved_ip: Option<std::net::Ipv4Addr>,
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

/// The HTTP check that says a droplet's application is up: used by doproxy
/// before a new droplet joins, and by HAProxy's own health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub port: u16,
    pub status: u16,
    /// How long `create` waits for a new droplet to pass it.
    pub ready_timeout: Duration,
}

/// The values the droplet create request needs; present only when the config
/// names them all.
#[derive(Debug)]
pub struct DropletSpec<'a> {
    pub hostname_prefix: &'a str,
    pub region: &'a str,
    pub size: &'a str,
    pub image: &'a Image,
}

/// Checks the autoscale section; errors are one sentence saying what to write.
fn autoscale_policy(
    section: AutoscaleFile,
    duration: &impl Fn(&str, Option<String>, u64) -> Result<Duration>,
) -> Result<Policy> {
    let targets: Vec<(Metric, f64)> = [
        (Metric::SessionsPerServer, section.sessions_per_server),
        (
            Metric::RequestRatePerServer,
            section.request_rate_per_server,
        ),
        (Metric::QueuedPerServer, section.queued_per_server),
        (Metric::CpuPercent, section.cpu_percent),
    ]
    .into_iter()
    .filter_map(|(metric, target)| Some((metric, target?)))
    .collect();
    if targets.is_empty() {
        bail!(
            "give at least one target: sessions_per_server, request_rate_per_server, queued_per_server or cpu_percent"
        );
    }
    if let Some((metric, target)) = targets.iter().find(|(_, t)| !(t.is_finite() && *t > 0.0)) {
        bail!(
            "{} must be a number above 0, not {target}",
            metric_name(*metric)
        );
    }
    if section.cpu_percent.is_some_and(|cpu| cpu > 100.0) {
        bail!("cpu_percent is a percentage of the droplet's CPUs, so at most 100");
    }
    let max = section
        .max
        .context("max is missing; say how many droplets the pool may grow to")?;
    let min = section.min.unwrap_or(1);
    if max == 0 || min > max {
        bail!("min ({min}) must not exceed max ({max}), and max must be at least 1");
    }
    let scale_in_step = section.scale_in_step.unwrap_or(1);
    if scale_in_step == 0 {
        bail!("scale_in_step must be at least 1");
    }
    let interval = duration("autoscale.interval", section.interval, 60)?;
    if interval.is_zero() {
        bail!("interval must be longer than 0s");
    }
    Ok(Policy {
        min,
        max,
        targets,
        cooldown: duration("autoscale.cooldown", section.cooldown, 300)?,
        scale_in_step,
        interval,
    })
}

/// Checks the heal section; errors are one sentence saying what to write.
fn heal_policy(
    section: HealFile,
    duration: &impl Fn(&str, Option<String>, u64) -> Result<Duration>,
) -> Result<HealPolicy> {
    let defaults = HealPolicy::default();
    let max_share_per_hour = section
        .max_share_per_hour
        .unwrap_or(defaults.max_share_per_hour);
    if !(1..=100).contains(&max_share_per_hour) {
        bail!("max_share_per_hour is a percentage of the pool from 1 to 100");
    }
    let outage_share = section.outage_share.unwrap_or(defaults.outage_share);
    if outage_share > 100 {
        bail!("outage_share is a percentage of the pool from 0 to 100");
    }
    let interval = duration(
        "heal.interval",
        section.interval,
        defaults.interval.as_secs(),
    )?;
    if interval.is_zero() {
        bail!("interval must be longer than 0s");
    }
    Ok(HealPolicy {
        grace: duration("heal.grace", section.grace, defaults.grace.as_secs())?,
        max_share_per_hour,
        outage_share,
        interval,
    })
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
        let folder = path.parent().unwrap_or(Path::new("/"));
        let duration = |key: &str, text: Option<String>, default_secs: u64| match text {
            None => Ok(Duration::from_secs(default_secs)),
            Some(text) => parse_duration(&text).map_err(|err| {
                anyhow::anyhow!(
                    "{key} {text:?} in {} is not a duration ({err}); write it like 90s or 2m",
                    path.display()
                )
            }),
        };
        // A bound of zero would fail every command at once.
        let positive = |key: &str, text: Option<String>, default_secs: u64| {
            let bound = duration(key, text, default_secs)?;
            if bound.is_zero() {
                bail!(
                    "{key} in {} must be longer than 0s; write it like 30s",
                    path.display()
                );
            }
            Ok(bound)
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { folder.join(p) };

        let secrets_in_file = file.token.is_some() || file.etcd_password.is_some();
        let token = TOKEN_ENV
            .iter()
            .find_map(|name| env(name))
            .or(file.token.filter(|t| !t.trim().is_empty()))
            .map(|t| Token::new(t.trim().to_string()));
        let api_url = env(API_URL_ENV)
            .or(file.api_url)
            .unwrap_or_else(|| "https://api.digitalocean.com".to_string());
        let droplet_features = droplet_features(&file.droplet_options, path)?;
        let explicit_tags = file.droplet_options.tags.is_some();
        let tags = droplet_tags(
            file.droplet_options.tags,
            file.pool.as_deref(),
            file.droplet_options.hostname_prefix.as_deref(),
            path,
        )?;
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
        let mut config = Config {
            path: path.to_path_buf(),
            token,
            ssh_keys: file.ssh_key_ids,
            userdata_file: file.userdata_file.map(resolve),
            haproxy_cfg_file: resolve(file.haproxy_cfg_file.unwrap_or("haproxy.cfg".into())),
            haproxy_cfg_path: resolve(
                file.haproxy_cfg_path
                    .unwrap_or("/etc/haproxy/haproxy.cfg".into()),
            ),
            haproxy_template_file: file.haproxy_template_file.map(resolve),
            inventory_file: resolve(file.inventory_file.unwrap_or("inventory".into())),
            hostname_prefix: file.droplet_options.hostname_prefix,
            region: file.droplet_options.region,
            size: file.droplet_options.size,
            image: file.droplet_options.image,
            tags,
            droplet_features,
            api_url: api_url.trim_end_matches('/').to_string(),
            metadata_url: file
                .metadata_url
                .unwrap_or_else(|| "http://169.254.169.254".to_string())
                .trim_end_matches('/')
                .to_string(),
            frontend_bind: file.frontend_bind,
            backend_port: file.backend_port.unwrap_or(80),
            haproxy_check_command: file
                .haproxy_check_command
                .unwrap_or_else(|| "haproxy -c -f {file}".to_string()),
            haproxy_reload_command: file.haproxy_reload_command.unwrap_or_else(|| {
                "systemctl reload haproxy || service haproxy reload".to_string()
            }),
            haproxy_socket: file.haproxy_socket.map(resolve),
            haproxy_check_timeout: positive(
                "haproxy_check_timeout",
                file.haproxy_check_timeout,
                60,
            )?,
            haproxy_reload_timeout: positive(
                "haproxy_reload_timeout",
                file.haproxy_reload_timeout,
                60,
            )?,
            haproxy_socket_timeout: positive(
                "haproxy_socket_timeout",
                file.haproxy_socket_timeout,
                5,
            )?,
            api_retry_budget: duration("api_retry_budget", file.api_retry_budget, 120)?,
            health_check: HealthCheck {
                path: file.health_check_path.unwrap_or_else(|| "/".to_string()),
                port: file.health_check_port.or(file.backend_port).unwrap_or(80),
                status: file.health_check_status.unwrap_or(200),
                ready_timeout: duration("ready_timeout", file.ready_timeout, 300)?,
            },
            etcd: None,
            autoscale: None,
            failover: FailoverSettings {
                reserved_ip: file.reserved_ip,
                lease_ttl: positive("failover_lease_ttl", file.failover_lease_ttl, 10)?,
                check_interval: positive(
                    "failover_check_interval",
                    file.failover_check_interval,
                    1,
                )?,
                recheck_interval: positive(
                    "failover_recheck_interval",
                    file.failover_recheck_interval,
                    30,
                )?,
                min_hold: duration("failover_min_hold", file.failover_min_hold, 30)?,
            },
            heal: None,
            secrets_in_file,
            haproxy_runtime_updates: file.haproxy_runtime_updates.unwrap_or(true),
            haproxy_stats_bind: file.haproxy_stats_bind,
            metrics: metrics::Settings {
                listen: file.metrics_listen,
                allow_remote: file.metrics_allow_remote.unwrap_or(false),
                textfile: file.metrics_textfile.map(resolve),
            },
            confirm_creates_above: file.confirm_creates_above.unwrap_or(10),
        };
        // Each pool's inventory lives under a prefix named by its tag (tags
        // hold no `/`, so no pool's keys fall under another's). Before, a
        // pool without explicit tags used the shared /doproxy/doproxy/; its
        // droplets still there are to be moved (see shared_prefix).
        let shared_prefix = format!("/doproxy/{SHARED_TAG}/");
        let own_prefix = format!("/doproxy/{}/", config.pool_tag());
        let moved_away =
            file.etcd_prefix.is_none() && !explicit_tags && own_prefix != shared_prefix;
        config.etcd = match file.inventory_backend.as_deref() {
            None | Some("file") => None,
            Some("etcd") => Some(EtcdSettings {
                client: etcd::Settings {
                    endpoints: file.etcd_endpoints.filter(|e| !e.is_empty()).with_context(|| {
                        format!(
                            "inventory_backend is etcd but etcd_endpoints is missing in {}; list your etcd client URLs, e.g. [http://10.0.0.2:2379]",
                            path.display()
                        )
                    })?,
                    username: file.etcd_username,
                    password: env(ETCD_PASSWORD_ENV).or(file.etcd_password),
                    ca_file: file.etcd_ca_file.map(resolve),
                    cert_file: file.etcd_cert_file.map(resolve),
                    key_file: file.etcd_key_file.map(resolve),
                },
                prefix: file.etcd_prefix.unwrap_or(own_prefix),
                pool: config.pool(),
                shared_prefix: moved_away.then_some(shared_prefix),
            }),
            Some(other) => bail!(
                "inventory_backend {other:?} in {} is unknown; use file (the default) or etcd",
                path.display()
            ),
        };
        config.autoscale = file
            .autoscale
            .map(|section| autoscale_policy(section, &duration))
            .transpose()
            .map_err(|err| {
                anyhow::anyhow!(
                    "the autoscale section of {} is invalid: {err}",
                    path.display()
                )
            })?;
        // etcd counts leases in whole seconds, and renews them every third.
        if config.failover.lease_ttl < Duration::from_secs(3) {
            bail!(
                "failover_lease_ttl in {} must be at least 3s; write it like 10s",
                path.display()
            );
        }
        config.heal = file
            .heal
            .map(|section| heal_policy(section, &duration))
            .transpose()
            .map_err(|err| {
                anyhow::anyhow!("the heal section of {} is invalid: {err}", path.display())
            })?;
        if !config.health_check.path.starts_with('/') {
            bail!(
                "health_check_path {:?} in {} must start with /; write it like /healthz",
                config.health_check.path,
                path.display()
            );
        }
        let file_name = path.display();
        let socket = config
            .haproxy_socket
            .as_ref()
            .map(|socket| socket.display().to_string());
        for (key, value) in [
            ("frontend_bind", config.frontend_bind.as_deref()),
            ("haproxy_stats_bind", config.haproxy_stats_bind.as_deref()),
            ("haproxy_socket", socket.as_deref()),
            ("health_check_path", Some(config.health_check.path.as_str())),
        ] {
            if let Some(value) = value
                && value.chars().any(char::is_control)
            {
                bail!(
                    "{key} {value:?} in {file_name} holds a line break or another control character, which would end its line in the HAProxy config; write it on one line"
                );
            }
        }
        if config.health_check.path.contains(char::is_whitespace) {
            bail!(
                "health_check_path {:?} in {file_name} holds a space, which HAProxy's health check cannot send; encode it as %20",
                config.health_check.path
            );
        }
        if let Some(bind) = &config.haproxy_stats_bind {
            metrics::check_unauthenticated_listener(
                "haproxy_stats_bind",
                bind,
                binds_loopback_only(bind),
                config.metrics.allow_remote,
            )?;
        }
        if !file.allow_insecure_http.unwrap_or(false) {
            let api_url_key = if env(API_URL_ENV).is_some() {
                "$DIGITALOCEAN_API_URL"
            } else {
                "api_url"
            };
            if config.token.is_some() && in_clear(&config.api_url) {
                bail!(
                    "{api_url_key} {} is plain http:// to another machine, so the API token would cross the network unencrypted; use https://, or set allow_insecure_http: true in {file_name} if nobody else can see that network",
                    config.api_url
                );
            }
            if let Some(etcd) = &config.etcd
                && (etcd.client.username.is_some() || etcd.client.password.is_some())
                && let Some(endpoint) = etcd.client.endpoints.iter().find(|e| in_clear(e))
            {
                bail!(
                    "etcd endpoint {endpoint} is plain http:// to another machine, so etcd_username and etcd_password would cross the network unencrypted; use https:// (with etcd_ca_file), or set allow_insecure_http: true in {file_name} if nobody else can see that network"
                );
            }
        }
        if let Some(template) = &config.haproxy_template_file
            && template.extension().is_some_and(|ext| ext == "erb")
        {
            bail!(
                "haproxy_template_file {} is a Ruby ERB template, which doproxy cannot render; remove the key to use the built-in template, or point it at a Tera template (see templates/haproxy.cfg.tera)",
                template.display()
            );
        }
        Ok(config)
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
        Ok(DropletSpec {
            hostname_prefix: self
                .hostname_prefix
                .as_deref()
                .ok_or_else(|| missing("hostname_prefix", "auto-nginx"))?,
            region: self
                .region
                .as_deref()
                .ok_or_else(|| missing("region", "nyc3"))?,
            size: self
                .size
                .as_deref()
                .ok_or_else(|| missing("size", "s-1vcpu-1gb"))?,
            image: self
                .image
                .as_ref()
                .ok_or_else(|| missing("image", "ubuntu-24-04-x64"))?,
        })
    }

    /// Fails while ssh_key_ids holds the placeholder `doproxy init` wrote,
    /// which DigitalOcean refuses only once everything else is done.
    pub fn check_ssh_keys(&self) -> Result<()> {
        let placeholder = SshKey::Fingerprint(SSH_KEY_PLACEHOLDER.to_string());
        if self.ssh_keys.contains(&placeholder) {
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
        &self.tags[0]
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

    /// This pool, as its droplets show it.
    pub fn pool(&self) -> Pool {
        Pool {
            tag: self.pool_tag().to_string(),
            hostname_prefix: self.hostname_prefix.clone(),
        }
    }
}

/// Whether a request to `url` would cross the network unencrypted: plain
/// http:// to a host other than this machine's loopback.
fn in_clear(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let local = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(ip) => IpAddr::is_loopback(&ip),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    url.scheme() == "http" && !local
}

/// Whether every address of a HAProxy `bind` (`127.0.0.1:8404`, a list
/// `a:1,b:2`, `ipv4@...`, a UNIX socket) is on this machine only; `*:8404`,
/// `:8404` and other machines' addresses are not.
fn binds_loopback_only(bind: &str) -> bool {
    let addresses = bind.split_whitespace().next().unwrap_or_default();
    addresses.split(',').all(|address| {
        let address = address
            .strip_prefix("ipv4@")
            .or_else(|| address.strip_prefix("ipv6@"))
            .unwrap_or(address);
        if address.starts_with('/') || address.starts_with("unix@") || address.starts_with("abns@")
        {
            return true;
        }
        match address.parse::<SocketAddr>() {
            Ok(socket) => socket.ip().is_loopback(),
            Err(_) => address
                .rsplit_once(':')
                .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
        }
    })
}

/// The new droplet options, with vpc_uuid and project_id checked to be UUIDs
/// (a typo would otherwise fail every create).
fn droplet_features(options: &DropletOptions, path: &Path) -> Result<DropletFeatures> {
    for (key, value, example, source) in [
        (
            "vpc_uuid",
            &options.vpc_uuid,
            "760e09ef-dc84-11e8-981e-3cfdfeaae000",
            "doctl vpcs list",
        ),
        (
            "project_id",
            &options.project_id,
            "4e1bfbc3-dc3e-41f2-a18f-1b4d7ba71679",
            "doctl projects list",
        ),
    ] {
        if let Some(value) = value
            && !is_uuid(value)
        {
            bail!(
                "droplet_options.{key} {value:?} in {} is not a UUID such as {example}; copy it from {source}",
                path.display()
            );
        }
    }
    Ok(DropletFeatures {
        vpc_uuid: options.vpc_uuid.clone(),
        ipv6: options.ipv6.unwrap_or(false),
        backups: options.backups.unwrap_or(false),
        monitoring: options.monitoring.unwrap_or(true),
        with_droplet_agent: options.with_droplet_agent,
        project_id: options.project_id.clone(),
    })
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The tags new droplets get, the pool's own tag first. An explicit
/// droplet_options.tags is taken as written. Otherwise the pool is named by
/// `pool`, else by hostname_prefix, and its droplets carry `doproxy:<pool>`
/// and `doproxy`; with neither, just `doproxy` (shared by every such pool).
fn droplet_tags(
    explicit: Option<Vec<String>>,
    pool: Option<&str>,
    hostname_prefix: Option<&str>,
    path: &Path,
) -> Result<Vec<String>> {
    let file = path.display();
    let is_tag = |tag: &str| {
        (1..=MAX_TAG_LEN).contains(&tag.len())
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
    };
    match (explicit, pool) {
        (Some(_), Some(_)) => bail!(
            "pool and droplet_options.tags in {file} both set the pool's tag (with tags, the first one is the pool's tag); keep one of them"
        ),
        (Some(tags), None) => {
            if tags.is_empty() {
                bail!(
                    "droplet_options.tags in {file} is empty; doproxy finds its droplets by their first tag, so give at least one, or remove the key to use doproxy:<pool>"
                );
            }
            match tags.iter().find(|t| !is_tag(t)) {
                Some(bad) => bail!(
                    "droplet_options.tags in {file} has {bad:?}, which is no DigitalOcean tag; use letters, digits, -, _ and : (at most {MAX_TAG_LEN})"
                ),
                None => Ok(tags),
            }
        }
        (None, Some(pool)) => {
            let tag = format!("{POOL_TAG_PREFIX}{pool}");
            if !is_tag(&tag) {
                bail!(
                    "pool {pool:?} in {file} is no valid pool name; use letters, digits, -, _ and : (at most {} of them)",
                    MAX_TAG_LEN - POOL_TAG_PREFIX.len()
                );
            }
            Ok(vec![tag, SHARED_TAG.to_string()])
        }
        (None, None) => match hostname_prefix {
            Some(prefix) => {
                // Hostnames may hold dots, tags may not.
                let pool: String = prefix
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let tag = format!("{POOL_TAG_PREFIX}{pool}");
                if !is_tag(&tag) {
                    bail!(
                        "droplet_options.hostname_prefix in {file} is too long to name the pool's tag; set pool to a shorter name"
                    );
                }
                Ok(vec![tag, SHARED_TAG.to_string()])
            }
            None => Ok(vec![SHARED_TAG.to_string()]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// doproxy.yml as the Ruby DOProxy tutorial shipped it.
    const ORIGINAL: &str = "\
token: 878a490235d53e34b44369b8e78
ssh_key_ids:           # DigitalOcean ID for your SSH Key
  - 163420
haproxy_cfg_path: /etc/haproxy/haproxy.cfg
haproxy_template_file: haproxy.cfg.tera
inventory_file: inventory
userdata_file: user-data.yml
haproxy_cfg_file: haproxy.cfg
droplet_options:
  hostname_prefix: auto-nginx
  region: nyc3
  size: 1gb
  image: ubuntu-14-04-x64
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn original_file_loads_with_paths_beside_it() {
        let config =
            Config::parse(ORIGINAL, Path::new("/srv/doproxy/doproxy.yml"), no_env).unwrap();
        assert_eq!(config.inventory_file, Path::new("/srv/doproxy/inventory"));
        assert_eq!(
            config.userdata_file.as_deref(),
            Some(Path::new("/srv/doproxy/user-data.yml"))
        );
        assert_eq!(
            config.haproxy_cfg_path,
            Path::new("/etc/haproxy/haproxy.cfg")
        );
        assert_eq!(config.ssh_keys, vec![SshKey::Id(163420)]);
        assert_eq!(
            config.token().unwrap().secret(),
            "878a490235d53e34b44369b8e78"
        );
        let spec = config.droplet_spec().unwrap();
        assert_eq!((spec.hostname_prefix, spec.size), ("auto-nginx", "1gb"));
        assert_eq!(spec.image, &Image::Slug("ubuntu-14-04-x64".into()));
        assert_eq!(config.tags, vec!["doproxy:auto-nginx", "doproxy"]);
        assert_eq!(config.pool_tag(), "doproxy:auto-nginx");
        assert_eq!(config.backend_port, 80);
        assert_eq!(config.api_url, "https://api.digitalocean.com");
        assert_eq!(config.api_retry_budget, Duration::from_secs(120));
        let check = HealthCheck {
            path: "/".into(),
            port: 80,
            status: 200,
            ready_timeout: Duration::from_secs(300),
        };
        assert_eq!(config.health_check, check);
    }

    #[test]
    fn environment_token_and_api_url_override_the_file() {
        let env = |name: &str| match name {
            "DIGITALOCEAN_TOKEN" => Some("from-env".to_string()),
            "DIGITALOCEAN_API_URL" => Some("http://127.0.0.1:9/".to_string()),
            _ => None,
        };
        let config = Config::parse(ORIGINAL, Path::new("/x/doproxy.yml"), env).unwrap();
        assert_eq!(config.token().unwrap().secret(), "from-env");
        assert_eq!(config.api_url, "http://127.0.0.1:9");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::parse(
            "droplet_options:\n  size: [1]\n",
            Path::new("/x/d.yml"),
            no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("droplet_options.size"), "{err}");
        let err = Config::parse("api_retry_budget: soon\n", Path::new("/x/d.yml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_retry_budget"), "{err}");
        let err = Config::parse("ready_timeout: 500y\n", Path::new("/x/d.yml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ready_timeout") && err.contains("10 years"),
            "{err}"
        );
        let err = Config::parse("haproxy_cfg_pth: x\n", Path::new("/x/d.yml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("haproxy_cfg_pth"), "{err}");
        let config = Config::parse("", Path::new("/x/d.yml"), no_env).unwrap();
        let err = config.droplet_spec().unwrap_err().to_string();
        assert!(err.contains("droplet_options.hostname_prefix"), "{err}");
        let err = config.token().unwrap_err().to_string();
        assert!(err.contains("DIGITALOCEAN_ACCESS_TOKEN"), "{err}");
    }

    #[test]
    fn autoscale_policies_are_checked() {
        let policy = |text: &str| {
            Config::parse(
                &format!("autoscale:\n{text}"),
                Path::new("/x/d.yml"),
                no_env,
            )
        };
        let config = policy(
            "  min: 2\n  max: 8\n  sessions_per_server: 50\n  cpu_percent: 70\n  cooldown: 2m\n",
        )
        .unwrap();
        let autoscale = config.autoscale.unwrap();
        assert_eq!(
            (autoscale.min, autoscale.max, autoscale.targets.len()),
            (2, 8, 2)
        );
        assert_eq!(autoscale.cooldown, Duration::from_secs(120));
        assert_eq!(autoscale.interval, Duration::from_secs(60));
        for (text, needle) in [
            ("  max: 4\n", "at least one target"),
            ("  sessions_per_server: 5\n", "max is missing"),
            ("  min: 5\n  max: 2\n  cpu_percent: 50\n", "must not exceed"),
            ("  max: 2\n  cpu_percent: 150\n", "at most 100"),
            (
                "  max: 2\n  queued_per_server: 0\n",
                "queued_per_server must be a number above 0",
            ),
            (
                "  max: 2\n  cpu_percent: 50\n  cooldown: later\n",
                "autoscale.cooldown",
            ),
            (
                "  max: 2\n  cpu_percent: 50\n  target: 3\n",
                "unknown field `target`",
            ),
        ] {
            let err = format!("{:#}", policy(text).unwrap_err());
            assert!(
                err.contains("autoscale") && err.contains(needle),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn heal_policies_have_defaults_and_are_checked() {
        let heal = |text: &str| {
            Config::parse(&format!("heal:{text}"), Path::new("/x/d.yml"), no_env).map(|c| c.heal)
        };
        assert_eq!(heal(" {}\n").unwrap(), Some(HealPolicy::default()));
        assert_eq!(
            Config::parse("", Path::new("/x/d.yml"), no_env)
                .unwrap()
                .heal,
            None
        );
        let policy =
            heal(" {grace: 30s, max_share_per_hour: 50, outage_share: 80, interval: 5s}\n")
                .unwrap()
                .unwrap();
        assert_eq!(policy.grace, Duration::from_secs(30));
        assert_eq!((policy.max_share_per_hour, policy.outage_share), (50, 80));
        for (text, needle) in [
            (" {max_share_per_hour: 0}\n", "from 1 to 100"),
            (" {outage_share: 101}\n", "from 0 to 100"),
            (" {interval: 0s}\n", "longer than 0s"),
            (" {grace: soon}\n", "heal.grace"),
            (" {graze: 1m}\n", "heal: unknown field `graze`"),
        ] {
            let err = format!("{:#}", heal(text).unwrap_err());
            assert!(
                err.contains("heal") && err.contains(needle),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn each_pool_has_its_own_tag_and_explicit_tags_keep_their_meaning() {
        let tags = |text: &str| Config::parse(text, Path::new("/x/d.yml"), no_env).map(|c| c.tags);
        let prefix = |p: &str| format!("droplet_options: {{hostname_prefix: {p}}}\n");
        assert_eq!(
            tags(&prefix("web.example")).unwrap(),
            ["doproxy:web_example", "doproxy"]
        );
        assert_eq!(
            tags(&format!("pool: api-eu\n{}", prefix("web"))).unwrap(),
            ["doproxy:api-eu", "doproxy"]
        );
        assert_eq!(
            tags("droplet_options: {tags: [web, env-prod]}\n").unwrap(),
            ["web", "env-prod"]
        );
        assert_eq!(
            tags("").unwrap(),
            ["doproxy"],
            "no pool named: the shared tag"
        );
        for (text, needle) in [
            ("pool: web\ndroplet_options: {tags: [web]}\n", "keep one"),
            ("pool: web.eu\n", "pool \"web.eu\" in /x/d.yml"),
            ("droplet_options: {tags: []}\n", "is empty"),
            ("droplet_options: {tags: [a b]}\n", "\"a b\""),
            (&prefix(&"w".repeat(250)), "set pool to a shorter name"),
        ] {
            let err = tags(text).unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains("/x/d.yml"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn each_pool_has_its_own_default_etcd_prefix_and_knows_the_one_it_shared() {
        let etcd = |text: &str| {
            let text =
                format!("{text}inventory_backend: etcd\netcd_endpoints: [http://127.0.0.1:2379]\n");
            let settings = Config::parse(&text, Path::new("/x/d.yml"), no_env)
                .unwrap()
                .etcd
                .unwrap();
            (settings.prefix, settings.shared_prefix)
        };
        let shared = Some("/doproxy/doproxy/".to_string());
        assert_eq!(
            etcd(ORIGINAL),
            ("/doproxy/doproxy:auto-nginx/".to_string(), shared.clone())
        );
        assert_eq!(
            etcd("pool: web\n"),
            ("/doproxy/doproxy:web/".to_string(), shared)
        );
        assert_eq!(
            etcd("pool: api\n").0,
            "/doproxy/doproxy:api/",
            "two pools never share keys or a lock"
        );
        // Where the prefix did not move: set, from explicit tags, no pool.
        assert_eq!(
            etcd(&format!("{ORIGINAL}etcd_prefix: /mine/\n")),
            ("/mine/".to_string(), None)
        );
        assert_eq!(
            etcd("droplet_options: {tags: [web]}\n"),
            ("/doproxy/web/".to_string(), None)
        );
        assert_eq!(etcd(""), ("/doproxy/doproxy/".to_string(), None));
    }

    #[test]
    fn failover_keys_have_defaults_and_bounds() {
        let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
        let defaults = FailoverSettings {
            reserved_ip: None,
            lease_ttl: Duration::from_secs(10),
            check_interval: Duration::from_secs(1),
            recheck_interval: Duration::from_secs(30),
            min_hold: Duration::from_secs(30),
        };
        assert_eq!(config.failover, defaults);
        let text = format!("{ORIGINAL}reserved_ip: 203.0.113.7\nfailover_min_hold: 0s\n");
        let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
        assert_eq!(config.failover.reserved_ip, Some([203, 0, 113, 7].into()));
        assert_eq!(config.failover.min_hold, Duration::ZERO);
        for (text, needle) in [
            ("failover_lease_ttl: 2s\n", "at least 3s"),
            ("failover_check_interval: 0s\n", "longer than 0s"),
            ("reserved_ip: 203.0.113\n", "reserved_ip"),
        ] {
            let err = Config::parse(text, Path::new("/x/d.yml"), no_env).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn new_droplet_options_have_defaults_and_uuids_are_checked() {
        let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
        let defaults = DropletFeatures {
            vpc_uuid: None,
            ipv6: false,
            backups: false,
            monitoring: true,
            with_droplet_agent: None,
            project_id: None,
        };
        assert_eq!(config.droplet_features, defaults);
        let text = format!(
            "{ORIGINAL}  vpc_uuid: 760e09ef-dc84-11e8-981e-3cfdfeaae000\n  ipv6: true\n  backups: true\n  monitoring: false\n  with_droplet_agent: false\n  project_id: 4e1bfbc3-dc3e-41f2-a18f-1b4d7ba71679\n"
        );
        let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
        let features = config.droplet_features;
        assert_eq!(
            features.vpc_uuid.as_deref(),
            Some("760e09ef-dc84-11e8-981e-3cfdfeaae000")
        );
        assert!(features.ipv6 && features.backups && !features.monitoring);
        assert_eq!(features.with_droplet_agent, Some(false));
        assert!(features.project_id.is_some());
        for (line, needle) in [
            (
                "  vpc_uuid: default\n",
                "droplet_options.vpc_uuid \"default\"",
            ),
            ("  project_id: web\n", "doctl projects list"),
        ] {
            let err = Config::parse(&format!("{ORIGINAL}{line}"), Path::new("/x/d.yml"), no_env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle) && err.contains("/x/d.yml"), "{err}");
        }
    }

    #[test]
    fn port_zero_is_refused() {
        for key in ["backend_port", "health_check_port"] {
            let err = Config::parse(&format!("{key}: 0\n"), Path::new("/x/d.yml"), no_env)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("{key} in /x/d.yml is 0")), "{err}");
        }
    }

    #[test]
    fn erb_template_is_refused_with_a_way_out() {
        let text = ORIGINAL.replace("haproxy.cfg.tera", "haproxy.cfg.erb");
        let err = Config::parse(&text, Path::new("/x/d.yml"), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("remove the key"), "{err}");
    }

    #[test]
    fn token_is_never_printed() {
        let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
        assert!(!format!("{config:?}").contains("878a490235d53e34b44369b8e78"));
        let text = format!(
            "{ORIGINAL}inventory_backend: etcd\netcd_endpoints: [http://127.0.0.1:2379]\netcd_username: root\netcd_password: hunter2\n"
        );
        let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.etcd.unwrap().prefix, "/doproxy/doproxy:auto-nginx/");
    }

    #[test]
    fn only_plain_http_to_another_machine_is_in_clear() {
        for url in [
            "http://10.0.0.2:2379",
            "http://api.example.com",
            "http://[2001:db8::1]:2379",
            "http://0.0.0.0:80",
        ] {
            assert!(in_clear(url), "{url}");
        }
        for url in [
            "https://api.digitalocean.com",
            "https://10.0.0.2:2379",
            "http://127.0.0.1:2379",
            "http://127.3.4.5",
            "http://[::1]:2379",
            "http://localhost:2379",
            "HTTP://LOCALHOST",
        ] {
            assert!(!in_clear(url), "{url}");
        }
    }

    #[test]
    fn secrets_go_in_clear_only_when_the_config_says_so() {
        let parse = |text: &str, env: &dyn Fn(&str) -> Option<String>| {
            Config::parse(text, Path::new("/x/d.yml"), env).map(|_| ())
        };
        let remote_api = "token: t\napi_url: http://192.0.2.1:8080\n";
        let err = parse(remote_api, &no_env).unwrap_err().to_string();
        assert!(
            err.starts_with("api_url http://192.0.2.1:8080 is plain http://")
                && err.contains("allow_insecure_http: true in /x/d.yml"),
            "{err}"
        );
        assert!(!err.contains("token: t"), "{err}");
        parse(&format!("{remote_api}allow_insecure_http: true\n"), &no_env).unwrap();
        // No token, nothing to leak; the token from the environment counts.
        parse("api_url: http://192.0.2.1:8080\n", &no_env).unwrap();
        let env_token = |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| "t".to_string());
        parse("api_url: http://192.0.2.1\n", &env_token).unwrap_err();
        let env_url = |name: &str| match name {
            "DIGITALOCEAN_API_URL" => Some("http://192.0.2.1".to_string()),
            "DIGITALOCEAN_TOKEN" => Some("t".to_string()),
            _ => None,
        };
        let err = parse("", &env_url).unwrap_err().to_string();
        assert!(
            err.starts_with("$DIGITALOCEAN_API_URL http://192.0.2.1 "),
            "{err}"
        );

        let etcd = |endpoint: &str, credentials: &str| {
            format!(
                "inventory_backend: etcd\netcd_endpoints: [http://127.0.0.1:2379, {endpoint}]\n{credentials}"
            )
        };
        for credentials in ["etcd_username: u\netcd_password: p\n", "etcd_username: u\n"] {
            let err = parse(&etcd("http://10.0.0.3:2379", credentials), &no_env)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("etcd endpoint http://10.0.0.3:2379 is plain http://")
                    && err.contains("allow_insecure_http"),
                "{err}"
            );
        }
        let password = |name: &str| (name == "DOPROXY_ETCD_PASSWORD").then(|| "p".to_string());
        parse(&etcd("http://10.0.0.3:2379", ""), &password).unwrap_err();
        parse(&etcd("http://10.0.0.3:2379", ""), &no_env).unwrap();
        let credentials = "etcd_username: u\netcd_password: p\n";
        parse(&etcd("https://10.0.0.3:2379", credentials), &no_env).unwrap();
        parse(&etcd("http://localhost:2379", credentials), &no_env).unwrap();
        parse(
            &etcd(
                "http://10.0.0.3:2379",
                &format!("{credentials}allow_insecure_http: true\n"),
            ),
            &no_env,
        )
        .unwrap();
    }

    #[test]
    fn the_stats_page_is_loopback_only_unless_allowed() {
        for bind in [
            "127.0.0.1:8404",
            "[::1]:8404",
            "ipv4@127.0.0.2:8404",
            "localhost:8404",
            "127.0.0.1:8404,[::1]:8404 ssl crt /etc/haproxy/stats.pem",
            "/run/haproxy/stats.sock",
            "unix@/run/haproxy/stats.sock",
        ] {
            assert!(binds_loopback_only(bind), "{bind}");
        }
        for bind in [
            "0.0.0.0:8404",
            ":8404",
            "*:8404",
            "[::]:8404",
            "10.0.0.2:8404",
            "127.0.0.1:8404,10.0.0.2:8404",
            "stats.example.com:8404",
        ] {
            assert!(!binds_loopback_only(bind), "{bind}");
        }
        let stats = |extra: &str| {
            Config::parse(
                &format!("haproxy_stats_bind: \"*:8404\"\n{extra}"),
                Path::new("/x/d.yml"),
                no_env,
            )
        };
        let err = stats("").unwrap_err().to_string();
        assert!(
            err.starts_with("haproxy_stats_bind *:8404 is not a loopback address")
                && err.ends_with("or set metrics_allow_remote: true"),
            "{err}"
        );
        assert_eq!(
            stats("metrics_allow_remote: true\n")
                .unwrap()
                .haproxy_stats_bind
                .as_deref(),
            Some("*:8404")
        );
        // The same check as metrics_listen's.
        let err =
            metrics::check_unauthenticated_listener("metrics_listen", "0.0.0.0:9477", false, false)
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("metrics_listen 0.0.0.0:9477 is not a loopback address"));
        metrics::check_unauthenticated_listener("metrics_listen", "0.0.0.0:9477", false, true)
            .unwrap();
    }

    #[test]
    fn values_the_template_prints_stay_on_their_line() {
        for (text, needle) in [
            (
                "frontend_bind: \"1.2.3.4:80\\nglobal\\n  insecure-fork-wanted\"\n",
                "frontend_bind \"1.2.3.4:80\\nglobal",
            ),
            ("health_check_path: \"/a\\r\"\n", "health_check_path"),
            ("health_check_path: /a b\n", "%20"),
            ("haproxy_socket: \"/run/a\\nb\"\n", "haproxy_socket"),
            (
                "haproxy_stats_bind: \"127.0.0.1:1\\nx\"\n",
                "haproxy_stats_bind",
            ),
        ] {
            let err = Config::parse(text, Path::new("/x/d.yml"), no_env)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(needle) && err.contains("/x/d.yml"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn haproxy_commands_and_socket_are_bounded() {
        let config = Config::parse(ORIGINAL, Path::new("/x/d.yml"), no_env).unwrap();
        assert_eq!(config.haproxy_check_timeout, Duration::from_secs(60));
        assert_eq!(config.haproxy_reload_timeout, Duration::from_secs(60));
        assert_eq!(config.haproxy_socket_timeout, Duration::from_secs(5));
        let text = format!("{ORIGINAL}haproxy_reload_timeout: 90s\n");
        let config = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap();
        assert_eq!(config.haproxy_reload_timeout, Duration::from_secs(90));
        let text = format!("{ORIGINAL}haproxy_socket_timeout: 0s\n");
        let err = Config::parse(&text, Path::new("/x/d.yml"), no_env).unwrap_err();
        assert!(err.to_string().contains("longer than 0s"), "{err}");
    }
}
