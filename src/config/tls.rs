//! The `tls:` section, checked into what `ops` takes (the domains, and
//! where certificates come from: an ACME CA or the user's PEM files) and
//! what the HAProxy template takes (`haproxy::TlsSettings`). Nothing of it
//! reaches HAProxy's config unchecked: domains are `Domain`s, the bind is
//! address:port words, the rest are paths doproxy chooses.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use super::Values;
use super::file::TlsFile;
use crate::acme::{self, AcmeSettings};
use crate::certificate::Domain;
use crate::haproxy;

/// How long one issuance may take (validation and signing included).
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(180);

/// HTTPS as `ops` takes it.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The names the certificate is for (the first is its subject).
    pub domains: Vec<Domain>,
    pub source: CertificateSource,
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// Issued and renewed by an ACME CA over HTTP-01.
    Acme(AcmeSettings),
    /// Brought by the user: a PEM chain (server's certificate first) and
    /// its private key, installed as they are; no ACME.
    Files { certificate: PathBuf, key: PathBuf },
}

/// Checks the `tls:` section; HAProxy's files go beside its live config
/// (`cfg_path`). Errors are one sentence saying what to write.
pub(super) fn tls_settings(
    section: TlsFile,
    values: &Values,
    cfg_path: &std::path::Path,
) -> Result<(TlsSettings, haproxy::TlsSettings)> {
    if section.domains.is_empty() {
        bail!("tls.domains is empty; list the names to serve, e.g. [example.com, www.example.com]");
    }
    let domains = section
        .domains
        .iter()
        .map(|name| Domain::parse(name).map_err(|err| anyhow::anyhow!("tls.domains: {err}")))
        .collect::<Result<Vec<_>>>()?;
    if let Some(bind) = &section.https_bind {
        check_bind(bind)?;
    }
    if let Some(email) = &section.contact_email {
        check_email(email)?;
    }
    let source = match (section.certificate_file, section.key_file) {
        (Some(certificate), Some(key)) => {
            for (key, set) in [
                ("acme_directory", section.acme_directory.is_some()),
                ("acme_ca_file", section.acme_ca_file.is_some()),
                ("contact_email", section.contact_email.is_some()),
            ] {
                if set {
                    bail!(
                        "tls.{key} is set along with tls.certificate_file, which brings its own certificate without ACME; remove one of the two"
                    );
                }
            }
            CertificateSource::Files {
                certificate: values.resolve(certificate),
                key: values.resolve(key),
            }
        }
        (None, None) => {
            let directory = section
                .acme_directory
                .unwrap_or_else(|| "letsencrypt".to_string());
            let url = acme::directory_url(&directory).to_string();
            if !url.starts_with("https://") {
                bail!(
                    "tls.acme_directory {directory:?} is neither letsencrypt, staging nor an https:// directory URL; write one of those"
                );
            }
            CertificateSource::Acme(AcmeSettings {
                directory_url: url,
                contact_email: section.contact_email,
                ca_file: section.acme_ca_file.map(|p| values.resolve(p)),
                timeout: ISSUANCE_TIMEOUT,
            })
        }
        _ => bail!(
            "tls.certificate_file and tls.key_file go together; give both to bring your own certificate, or neither to have one issued by ACME"
        ),
    };
    let hsts_max_age = match section.hsts_max_age {
        Some(text) => Some(
            values
                .duration("tls.hsts_max_age", Some(text), 0)?
                .as_secs(),
        ),
        None => None,
    };
    let folder = cfg_path.parent().unwrap_or(std::path::Path::new("/"));
    let template = haproxy::TlsSettings {
        bind: section.https_bind,
        domains: domains.clone(),
        certificate_file: folder.join("doproxy-certificate.pem"),
        challenge_map: folder.join("doproxy-acme-challenges.map"),
        redirect: section.redirect_http.unwrap_or(true),
        hsts_max_age,
    };
    Ok((TlsSettings { domains, source }, template))
}

/// `address:port[,address:port...]`, each one word HAProxy's `bind` reads
/// as an address, so nothing else reaches its line.
fn check_bind(bind: &str) -> Result<()> {
    for part in bind.split(',') {
        let ok = !part.is_empty()
            && part.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '*' | '-')
            })
            && part
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_some_and(|port| port > 0);
        if !ok {
            bail!(
                "tls.https_bind {bind:?} is not a list of address:port; write it like :443 or 203.0.113.7:443,10.17.0.5:443"
            );
        }
    }
    Ok(())
}

/// A plain address: one `@`, text on both sides, no spaces or control
/// characters, nothing a mailto: URL would read as more.
fn check_email(email: &str) -> Result<()> {
    let ok = match email.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !email.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, ',' | '?' | '&' | '<' | '>')
                })
        }
        None => false,
    };
    if !ok {
        bail!("tls.contact_email {email:?} is not an email address; write it like ops@example.com");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(tls: &str) -> Result<Config> {
        Config::parse(
            &format!("haproxy_cfg_path: /etc/haproxy/haproxy.cfg\ntls: {tls}\n"),
            std::path::Path::new("/srv/doproxy/doproxy.yml"),
            |_| None,
        )
    }

    #[test]
    fn the_tls_section_defaults_to_lets_encrypt_with_a_redirect() {
        let config = parse("{domains: [Example.com, www.example.com]}").unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.domains[0].to_string(), "example.com");
        match tls.source {
            CertificateSource::Acme(acme) => {
                assert!(acme.directory_url.contains("acme-v02.api.letsencrypt.org"));
                assert_eq!(acme.contact_email, None);
            }
            other => panic!("{other:?}"),
        }
        let template = config.haproxy.tls.unwrap();
        assert_eq!(template.bind, None);
        assert!(template.redirect);
        assert_eq!(template.hsts_max_age, None);
        assert_eq!(
            template.certificate_file,
            std::path::Path::new("/etc/haproxy/doproxy-certificate.pem")
        );
        let staging = parse(
            "{domains: [example.com], acme_directory: staging, hsts_max_age: 365d, redirect_http: false, acme_ca_file: ca.pem}",
        )
        .unwrap();
        match staging.tls.unwrap().source {
            CertificateSource::Acme(acme) => {
                assert!(acme.directory_url.contains("acme-staging-v02"));
                assert_eq!(
                    acme.ca_file.unwrap(),
                    std::path::Path::new("/srv/doproxy/ca.pem")
                );
            }
            other => panic!("{other:?}"),
        }
        let template = staging.haproxy.tls.unwrap();
        assert_eq!(template.hsts_max_age, Some(365 * 86_400));
        assert!(!template.redirect);
        assert!(
            parse("{domains: [example.com]}")
                .unwrap()
                .haproxy
                .tls
                .is_some()
        );
    }

    #[test]
    fn user_brought_files_replace_acme() {
        let config =
            parse("{domains: [example.com], certificate_file: site.crt, key_file: site.key}")
                .unwrap();
        match config.tls.unwrap().source {
            CertificateSource::Files { certificate, key } => {
                assert_eq!(certificate, std::path::Path::new("/srv/doproxy/site.crt"));
                assert_eq!(key, std::path::Path::new("/srv/doproxy/site.key"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_tls_section_that_cannot_work_is_one_sentence_naming_the_key() {
        for (section, says) in [
            ("{domains: []}", "tls.domains is empty"),
            ("{domains: ['*.example.com']}", "wildcard"),
            ("{domains: ['a.com;reload']}", "only letters"),
            (
                "{domains: [a.com], acme_directory: http://ca.test/dir}",
                "tls.acme_directory",
            ),
            (
                "{domains: [a.com], https_bind: ':443 ssl crt /x'}",
                "tls.https_bind",
            ),
            (
                "{domains: [a.com], contact_email: nobody}",
                "tls.contact_email",
            ),
            ("{domains: [a.com], certificate_file: a.crt}", "go together"),
            (
                "{domains: [a.com], certificate_file: a.crt, key_file: a.key, contact_email: a@b.co}",
                "without ACME",
            ),
            (
                "{domains: [a.com], hsts_max_age: forever}",
                "tls.hsts_max_age",
            ),
            ("{domains: [a.com], no_such_key: 1}", "unknown field"),
        ] {
            let err = format!("{:#}", parse(section).unwrap_err());
            assert!(err.contains(says), "{section}: {err}");
        }
    }

    #[test]
    fn binds_and_emails_are_checked() {
        for good in [
            ":443",
            "203.0.113.7:443,10.17.0.5:443",
            "[::]:443",
            "*:8443",
        ] {
            check_bind(good).unwrap();
        }
        for bad in ["", "443", ":0", ":443 ssl crt /etc/passwd", ":443,", "a:b"] {
            assert!(check_bind(bad).is_err(), "{bad:?}");
        }
        check_email("ops@example.com").unwrap();
        for bad in [
            "ops",
            "@example.com",
            "ops@example",
            "o ps@example.com",
            "a@b.c,d@e.f",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }
}
