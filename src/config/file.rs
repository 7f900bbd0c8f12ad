//! doproxy.yml as written, key by key: what serde reads, before anything
//! is checked (like ripgrep's low-level arguments). `Config::parse` turns
//! it into the settings each layer takes.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::digitalocean::{Image, SshKey};

/// The file as written by the user. Unknown keys are refused so that a typo
/// (`haproxy_cfg_pth`) is an error instead of a silently ignored setting.
/// No Debug: it holds the token and the etcd password in the clear.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) token: Option<String>,
    #[serde(default)]
    pub(super) ssh_key_ids: Vec<SshKey>,
    pub(super) userdata_file: Option<PathBuf>,
    pub(super) haproxy_cfg_file: Option<PathBuf>,
    pub(super) haproxy_cfg_path: Option<PathBuf>,
    pub(super) haproxy_template_file: Option<PathBuf>,
    pub(super) inventory_file: Option<PathBuf>,
    pub(super) pool: Option<String>,
    #[serde(default)]
    pub(super) droplet_options: DropletOptions,
    pub(super) api_url: Option<String>,
    pub(super) metadata_url: Option<String>,
    pub(super) frontend_bind: Option<String>,
    pub(super) backend_port: Option<u16>,
    pub(super) haproxy_check_command: Option<String>,
    pub(super) haproxy_reload_command: Option<String>,
    pub(super) haproxy_socket: Option<PathBuf>,
    pub(super) haproxy_check_timeout: Option<String>,
    pub(super) haproxy_reload_timeout: Option<String>,
    pub(super) haproxy_socket_timeout: Option<String>,
    pub(super) api_retry_budget: Option<String>,
    pub(super) health_check_path: Option<String>,
    pub(super) health_check_port: Option<u16>,
    pub(super) health_check_status: Option<u16>,
    pub(super) ready_timeout: Option<String>,
    pub(super) inventory_backend: Option<String>,
    pub(super) etcd_endpoints: Option<Vec<String>>,
    pub(super) etcd_prefix: Option<String>,
    pub(super) etcd_username: Option<String>,
    pub(super) etcd_password: Option<String>,
    pub(super) etcd_ca_file: Option<PathBuf>,
    pub(super) etcd_cert_file: Option<PathBuf>,
    pub(super) etcd_key_file: Option<PathBuf>,
    pub(super) autoscale: Option<AutoscaleFile>,
    pub(super) haproxy_runtime_updates: Option<bool>,
    pub(super) haproxy_stats_bind: Option<String>,
    pub(super) metrics_listen: Option<SocketAddr>,
    pub(super) metrics_allow_remote: Option<bool>,
    pub(super) metrics_textfile: Option<PathBuf>,
    pub(super) allow_insecure_http: Option<bool>,
    pub(super) reserved_ip: Option<std::net::Ipv4Addr>,
    pub(super) failover_lease_ttl: Option<String>,
    pub(super) failover_check_interval: Option<String>,
    pub(super) failover_recheck_interval: Option<String>,
    pub(super) failover_min_hold: Option<String>,
    pub(super) heal: Option<HealFile>,
    pub(super) confirm_creates_above: Option<usize>,
    pub(super) tls: Option<TlsFile>,
    #[serde(default)]
    pub(super) notify: Vec<super::notify::NotifyFile>,
}

/// The `tls:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    #[serde(default)]
    pub(super) domains: Vec<String>,
    pub(super) acme_directory: Option<String>,
    pub(super) contact_email: Option<String>,
    pub(super) acme_ca_file: Option<PathBuf>,
    pub(super) https_bind: Option<String>,
    pub(super) redirect_http: Option<bool>,
    pub(super) hsts_max_age: Option<String>,
    pub(super) certificate_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

/// The `heal:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealFile {
    pub(super) grace: Option<String>,
    pub(super) max_share_per_hour: Option<u8>,
    pub(super) outage_share: Option<u8>,
    pub(super) interval: Option<String>,
}

/// The `autoscale:` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AutoscaleFile {
    pub(super) min: Option<usize>,
    pub(super) max: Option<usize>,
    pub(super) sessions_per_server: Option<f64>,
    pub(super) request_rate_per_server: Option<f64>,
    pub(super) queued_per_server: Option<f64>,
    pub(super) cpu_percent: Option<f64>,
    pub(super) response_time_ms: Option<f64>,
    pub(super) cooldown: Option<String>,
    pub(super) scale_in_step: Option<usize>,
    pub(super) interval: Option<String>,
    #[serde(default)]
    pub(super) schedule: Vec<ScheduleFile>,
}

/// One `autoscale.schedule` window as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleFile {
    pub(super) name: Option<String>,
    pub(super) cron: String,
    pub(super) time_zone: Option<String>,
    pub(super) duration: String,
    pub(super) min: usize,
    pub(super) max: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DropletOptions {
    pub(super) hostname_prefix: Option<String>,
    pub(super) region: Option<String>,
    pub(super) size: Option<String>,
    pub(super) image: Option<Image>,
    pub(super) tags: Option<Vec<String>>,
    pub(super) vpc_uuid: Option<String>,
    pub(super) ipv6: Option<bool>,
    pub(super) backups: Option<bool>,
    pub(super) monitoring: Option<bool>,
    pub(super) with_droplet_agent: Option<bool>,
    pub(super) project_id: Option<String>,
}
