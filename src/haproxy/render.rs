//! Turning the inventory into haproxy.cfg text: the template context (pure)
//! and the Tera rendering.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::settings::TlsSettings;
use crate::model::HealthCheck;
use crate::model::{DropletName, Entry};

/// The template shipped in the binary, used when haproxy_template_file is unset.
pub const BUILTIN_TEMPLATE: &str = include_str!("../../templates/haproxy.cfg.tera");

/// What a template can use.
#[derive(Debug, Serialize)]
pub struct TemplateContext<'a> {
    /// HAProxy bind address of the frontend, e.g. `203.0.113.7:80`.
    pub frontend_bind: String,
    pub backend_port: u16,
    /// Path of the admin socket, when the runtime API is configured.
    pub admin_socket: Option<String>,
    /// HAProxy's health check: `GET <path>` on `<port>`, expecting `<status>`.
    pub health_check_path: String,
    pub health_check_port: u16,
    pub health_check_status: u16,
    /// Where HAProxy serves its stats page and its own Prometheus exporter
    /// (haproxy_stats_bind); unset: nowhere.
    pub stats_bind: Option<String>,
    /// HTTPS, when the `tls:` section is set.
    pub https: Option<Https>,
    pub servers: Vec<Server<'a>>,
}

/// What the template needs for HTTPS.
#[derive(Debug, Serialize)]
pub struct Https {
    /// HAProxy bind address(es) of the HTTPS listener, e.g. `203.0.113.7:443`.
    pub bind: String,
    /// The certificate HAProxy serves (chain and key in one file).
    pub certificate_file: String,
    /// The map of HTTP-01 challenge answers (token -> key authorization).
    pub challenge_map: String,
    pub redirect: bool,
    pub hsts_max_age: Option<u64>,
}

impl Https {
    pub fn new(tls: &TlsSettings, frontend_bind: &str) -> Https {
        Https {
            bind: tls
                .bind
                .clone()
                .unwrap_or_else(|| https_binds(frontend_bind)),
            certificate_file: tls.certificate_file.display().to_string(),
            challenge_map: tls.challenge_map.display().to_string(),
            redirect: tls.redirect,
            hsts_max_age: tls.hsts_max_age,
        }
    }
}

/// The frontend's bind list with each address on port 443: HTTPS listens
/// where HTTP does (the public address, the reserved IP's anchor).
pub fn https_binds(frontend_bind: &str) -> String {
    frontend_bind
        .split(',')
        .map(|bind| match bind.trim().rsplit_once(':') {
            Some((address, _)) => format!("{address}:443"),
            None => format!("{}:443", bind.trim()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One `server` line of the backend.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Server<'a> {
    /// `www-<droplet id>`: stable across deletes, so the runtime API can
    /// address a server by name.
    pub name: String,
    pub id: u64,
    /// Checked to be a hostname where the entry was read: the only text
    /// from the inventory in the config.
    pub hostname: &'a DropletName,
    /// Written out as text, like the rest: serialized from the address
    /// itself, which spares 10,000 servers an allocation each.
    pub address: Ipv4Addr,
    pub port: u16,
}

impl<'a> TemplateContext<'a> {
    /// The context for `entries`: only droplets that are active and have a
    /// private address become servers.
    pub fn new(
        entries: &'a [Entry],
        frontend_bind: String,
        backend_port: u16,
        admin_socket: Option<&Path>,
        health_check: &HealthCheck,
        stats_bind: Option<&str>,
        tls: Option<&TlsSettings>,
    ) -> TemplateContext<'a> {
        let servers = entries
            .iter()
            .filter(|e| e.is_serving())
            .filter_map(|e| {
                Some(Server {
                    name: server_name(e.id),
                    id: e.id,
                    hostname: &e.name,
                    address: e.private_ip?,
                    port: backend_port,
                })
            })
            .collect();
        TemplateContext {
            https: tls.map(|tls| Https::new(tls, &frontend_bind)),
            frontend_bind,
            backend_port,
            admin_socket: admin_socket.map(|p| p.display().to_string()),
            health_check_path: health_check.path.clone(),
            health_check_port: health_check.port,
            health_check_status: health_check.status,
            stats_bind: stats_bind.map(str::to_string),
            servers,
        }
    }
}

/// The HAProxy server name of a droplet.
pub fn server_name(droplet_id: u64) -> String {
    format!("www-{droplet_id}")
}

/// The droplet a HAProxy server name stands for; None for a server doproxy
/// did not name.
pub fn droplet_id(server_name: &str) -> Option<u64> {
    server_name.strip_prefix("www-")?.parse().ok()
}

/// Renders `template` (named `template_name` in errors) with `context`.
pub fn render(template_name: &str, template: &str, context: &TemplateContext) -> Result<String> {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&str>::new());
    let fix = || format!("fix the template {template_name} and retry");
    tera.add_raw_template(template_name, template)
        .map_err(|err| anyhow::anyhow!("{err}"))
        .with_context(|| {
            format!(
                "the HAProxy template {template_name} has a syntax error; {}",
                fix()
            )
        })?;
    let context =
        tera::Context::from_serialize(context).context("cannot build the template context")?;
    tera.render(template_name, &context)
        .map_err(|err| anyhow::anyhow!("{err}"))
        .with_context(|| {
            format!(
                "the HAProxy template {template_name} failed to render; {}",
                fix()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn entry(id: u64, status: Status, ip: Option<Ipv4Addr>) -> Entry {
        Entry {
            private_ip: ip,
            status,
            ..Entry::named(id, &format!("auto-nginx-{id}"))
        }
    }

    fn context(entries: &[Entry]) -> TemplateContext<'_> {
        let check = HealthCheck {
            path: "/healthz".into(),
            port: 8081,
            status: 204,
            ready_timeout: std::time::Duration::ZERO,
        };
        TemplateContext::new(
            entries,
            "203.0.113.7:80".into(),
            8080,
            None,
            &check,
            None,
            None,
        )
    }

    #[test]
    fn only_serving_droplets_become_servers() {
        let ip = Some(Ipv4Addr::new(10, 0, 0, 1));
        let entries = [
            entry(1, Status::Active, ip),
            entry(2, Status::New, None),
            entry(3, Status::Destroying, ip),
            entry(4, Status::Active, None),
        ];
        let servers = context(&entries).servers;
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].name, "www-1");
        assert_eq!(servers[0].port, 8080);
    }

    #[test]
    fn builtin_template_renders_the_original_server_lines() {
        let entries = [entry(
            4202645,
            Status::Active,
            Some(Ipv4Addr::new(192, 0, 2, 175)),
        )];
        let text = render("builtin", BUILTIN_TEMPLATE, &context(&entries)).unwrap();
        assert!(text.contains(
            "    server www-4202645 192.0.2.175:8080 check # id:4202645, hostname:auto-nginx-4202645\n"
        ));
        assert!(text.contains("bind 203.0.113.7:80\n"));
        assert!(text.contains("http-request set-header X-Forwarded-Proto http"));
        assert!(!text.contains("reqadd"));
        assert!(text.contains("option httpchk GET /healthz\n"));
        assert!(text.contains("http-check expect status 204\n"));
        assert!(text.contains("default-server inter 2s fall 2 rise 1 port 8081\n"));
        assert!(!text.contains("stats socket"));
        let with_socket = TemplateContext {
            admin_socket: Some("/run/haproxy/admin.sock".into()),
            ..context(&entries)
        };
        let text = render("builtin", BUILTIN_TEMPLATE, &with_socket).unwrap();
        assert!(text.contains("stats socket /run/haproxy/admin.sock mode 660 level admin"));
        assert!(!text.contains("prometheus-exporter"));
        let with_stats = TemplateContext {
            stats_bind: Some("127.0.0.1:8404".into()),
            ..context(&entries)
        };
        let text = render("builtin", BUILTIN_TEMPLATE, &with_stats).unwrap();
        assert!(text.contains("    bind 127.0.0.1:8404\n"));
        assert!(text.contains("http-request use-service prometheus-exporter if { path /metrics }"));
    }

    #[test]
    fn https_listens_where_http_does_on_port_443() {
        assert_eq!(https_binds("203.0.113.7:80"), "203.0.113.7:443");
        assert_eq!(
            https_binds("203.0.113.7:80,10.17.0.5:80"),
            "203.0.113.7:443,10.17.0.5:443"
        );
        assert_eq!(https_binds("*:80"), "*:443");
        assert_eq!(https_binds(":::80"), ":::443");
    }

    #[test]
    fn builtin_template_serves_https_answers_challenges_and_redirects() {
        let tls = TlsSettings {
            bind: None,
            domains: Vec::new(),
            certificate_file: "/etc/haproxy/doproxy-certificate.pem".into(),
            challenge_map: "/etc/haproxy/doproxy-acme-challenges.map".into(),
            redirect: true,
            hsts_max_age: Some(31_536_000),
        };
        let with_tls = TemplateContext {
            https: Some(Https::new(&tls, "203.0.113.7:80")),
            ..context(&[])
        };
        let text = render("builtin", BUILTIN_TEMPLATE, &with_tls).unwrap();
        assert!(text.contains(
            "    bind 203.0.113.7:443 ssl crt /etc/haproxy/doproxy-certificate.pem alpn h2,http/1.1\n"
        ));
        assert!(text.contains("ssl-default-bind-options"));
        assert!(text.contains("map(/etc/haproxy/doproxy-acme-challenges.map)"));
        assert!(text.contains("http-request redirect scheme https code 301 if !{ ssl_fc } !{ path_beg /.well-known/acme-challenge/ }"));
        assert!(text.contains("X-Forwarded-Proto https if { ssl_fc }"));
        assert!(text.contains("Strict-Transport-Security \"max-age=31536000\" if { ssl_fc }"));
        let without = TemplateContext {
            https: Some(Https::new(
                &TlsSettings {
                    redirect: false,
                    hsts_max_age: None,
                    bind: Some("127.0.0.1:8443".into()),
                    ..tls
                },
                "203.0.113.7:80",
            )),
            ..context(&[])
        };
        let text = render("builtin", BUILTIN_TEMPLATE, &without).unwrap();
        assert!(text.contains("    bind 127.0.0.1:8443 ssl crt "));
        assert!(!text.contains("redirect scheme") && !text.contains("Strict-Transport-Security"));
        let plain = render("builtin", BUILTIN_TEMPLATE, &context(&[])).unwrap();
        assert!(!plain.contains("ssl") && !plain.contains("acme"));
    }

    #[test]
    fn template_errors_name_the_template() {
        let err = render("mine.tera", "{% for %}", &context(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("mine.tera"));
    }
}
