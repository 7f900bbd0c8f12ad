//! HAProxy's part of doproxy.yml, as this module takes it.

use std::path::PathBuf;
use std::time::Duration;

use crate::certificate::Domain;
use crate::model::HealthCheck;

/// Where the config is rendered and installed, from which template, the
/// commands that check and reload it, the admin socket, and the bounds on
/// each. No frontend bind: the caller resolves it (see `render_config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the config is rendered first (haproxy_cfg_file).
    pub cfg_file: PathBuf,
    /// The live config HAProxy reads (haproxy_cfg_path).
    pub cfg_path: PathBuf,
    /// None: the built-in template.
    pub template_file: Option<PathBuf>,
    pub backend_port: u16,
    /// `{file}` stands for the config to check.
    pub check_command: String,
    pub reload_command: String,
    /// The admin socket; None: no runtime API.
    pub socket: Option<PathBuf>,
    /// How long check_command may run before it is killed.
    pub check_timeout: Duration,
    /// How long reload_command may run before it is killed, and then how
    /// long the new worker may take to answer on the socket.
    pub reload_timeout: Duration,
    /// How long one exchange on the socket may take.
    pub socket_timeout: Duration,
    /// With the socket: servers are added and removed through the runtime
    /// API instead of a reload.
    pub runtime_updates: bool,
    /// Where the built-in template serves HAProxy's own stats page and
    /// Prometheus exporter; None: nowhere.
    pub stats_bind: Option<String>,
    /// What the template's health checks ask of each server.
    pub health_check: HealthCheck,
    /// HTTPS (the `tls:` section); None: plain HTTP only.
    pub tls: Option<TlsSettings>,
}

/// What the built-in template needs for HTTPS: where it listens, the
/// certificate file it serves (chain and key, 0600), the map of HTTP-01
/// challenge answers filled through the runtime API, and the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The HTTPS bind (`tls.https_bind`); None: the frontend's addresses
    /// on port 443.
    pub bind: Option<String>,
    /// The domains, for the self-signed stand-in written before the first
    /// certificate so that HAProxy can start.
    pub domains: Vec<Domain>,
    pub certificate_file: PathBuf,
    pub challenge_map: PathBuf,
    /// Plain HTTP requests (but the ACME challenge's) are redirected to HTTPS.
    pub redirect: bool,
    /// Strict-Transport-Security's max-age, in seconds; None: no header.
    pub hsts_max_age: Option<u64>,
}
