//! HTTPS certificates: what `cert status` shows, what `cert renew` and
//! `watch` do. The certificate and its key live in the store (etcd under
//! the pool's prefix, or files 0600 beside the inventory), so every proxy
//! serves the same one; exactly one proxy asks the CA at a time (it holds
//! the store's lock, an etcd lease with several proxies). A certificate is
//! installed through HAProxy's admin socket (`set ssl cert` + `commit ssl
//! cert`) without a reload, and written to the file HAProxy's config names
//! so that a restart agrees; only when the runtime path fails is HAProxy
//! reloaded, and that is said.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

mod keep;

use super::Context;
use crate::acme::{AccountKey, Acme};
use crate::atomic_file::{self, Readers};
use crate::certificate::renewal::{self, Due, Failures, Renewal};
use crate::certificate::{CertificateFacts, CertifiedKey};
use crate::config::{CertificateSource, TlsSettings};
use crate::haproxy::{self, Reload, Runtime};
use crate::inventory::StoreLock;
use crate::metrics;
use crate::model::{Change, Kind, Severity};
use keep::MapAnswers;

/// Store documents: the certificate (chain and key, PEM), the ACME
/// account's key, and the failed attempts since the last success.
const CERTIFICATE: &str = "tls-certificate";
const ACCOUNT_KEY: &str = "tls-acme-account-key";
const FAILURES: &str = "tls-failures";
/// The HTTP-01 answers of an issuance under way (token -> key
/// authorization), mirrored by every proxy's `watch` into its HAProxy's
/// map, so that the CA may reach any proxy behind the reserved IP.
const CHALLENGES: &str = "tls-challenges";
/// How long the renewing proxy gives the others to mirror its answers
/// before the CA is told to validate.
const MIRROR_WAIT: Duration = Duration::from_millis(2500);

/// How often `watch` makes sure HAProxy serves the stored certificate: a
/// certificate another proxy renewed is served here within 2 s.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often `watch` asks whether the certificate is due for renewal.
const RENEWAL_CHECK: Duration = Duration::from_secs(60);
/// How long `watch` waits for the lock to renew: another proxy holding it
/// is renewing, or doing something else; the next check tries again. Short,
/// so that this proxy keeps mirroring the other's challenge answers.
const RENEWAL_LOCK_WAIT: Duration = Duration::from_millis(200);

/// A certificate as `cert status` and `cert renew` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertificateView {
    pub domains: Vec<String>,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
    pub self_signed: bool,
}

impl CertificateView {
    fn of(facts: &CertificateFacts, now: SystemTime) -> CertificateView {
        CertificateView {
            domains: facts.domains.clone(),
            issuer: facts.issuer.clone(),
            serial: facts.serial.clone(),
            not_before: rfc3339(facts.not_before),
            not_after: rfc3339(facts.not_after),
            days_left: facts.days_left(now),
            self_signed: facts.self_signed,
        }
    }
}

/// What `cert status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    pub domains: Vec<String>,
    /// `acme` or `files`.
    pub source: &'static str,
    /// The ACME directory, or the user's certificate file.
    pub from: String,
    /// The certificate in the store (or the user's files); None: none yet.
    pub certificate: Option<CertificateView>,
    /// The serial HAProxy serves, from its admin socket; None without one,
    /// or when HAProxy does not answer.
    pub served_serial: Option<String>,
    /// When the next attempt is due (RFC 3339), or `now`; None for a
    /// certificate the user brings.
    pub next_renewal: Option<String>,
    pub failures: u32,
    pub last_failure: Option<String>,
}

/// How a certificate reached HAProxy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Installed {
    /// Through the admin socket, without a reload.
    Runtime,
    /// With a reload, because the runtime path failed (`why`).
    Reload { why: String },
}

/// What `cert renew` did.
#[derive(Debug, Serialize)]
pub struct Renewed {
    /// `issued`, `not_due`, `would_issue` (dry run) or `installed` (the
    /// user's files).
    pub action: &'static str,
    /// Why (the renewal decision), in words.
    pub reason: String,
    pub certificate: Option<CertificateView>,
    pub installed: Option<Installed>,
}

/// The failures since the last success, as kept in the store.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FailureState {
    count: u32,
    /// Unix seconds.
    last: Option<u64>,
    retry_after: Option<u64>,
    reason: Option<String>,
}

impl FailureState {
    fn failures(&self) -> Failures {
        Failures {
            count: self.count,
            last: self.last.map(unix),
            retry_after: self.retry_after.map(unix),
        }
    }
}

impl Context {
    /// The `tls:` section, or an error saying to add one.
    fn tls(&self) -> Result<&TlsSettings> {
        self.config.tls.as_ref().with_context(|| {
            format!(
                "{} has no tls section, so doproxy serves no HTTPS; add one (see docs/https.md)",
                self.config.path.display()
            )
        })
    }

    /// `cert status`.
    pub async fn certificate_status(&self) -> Result<Status> {
        let tls = self.tls()?;
        let now = SystemTime::now();
        let current = self.wanted_certificate(tls).await?;
        let served_serial = match (self.runtime(), &self.config.haproxy.tls) {
            (Some(runtime), Some(files)) => runtime
                .certificate_serial(&files.certificate_file)
                .await
                .unwrap_or(None),
            _ => None,
        };
        let facts = current.as_ref().map(CertifiedKey::facts);
        if let Some(facts) = facts {
            metrics::certificate_expiry(&facts.domains, unix_seconds(facts.not_after));
        }
        let (source, from, next_renewal, failures) = match &tls.source {
            CertificateSource::Acme(acme) => {
                let failures: FailureState = self.load_meta(FAILURES).await?;
                let next = match renewal::decide(facts, &tls.domains, &failures.failures(), now) {
                    Renewal::Now(_) => "now".to_string(),
                    Renewal::At(at) => rfc3339(at),
                };
                ("acme", acme.directory_url.clone(), Some(next), failures)
            }
            CertificateSource::Files { certificate, .. } => (
                "files",
                certificate.display().to_string(),
                None,
                FailureState::default(),
            ),
        };
        Ok(Status {
            domains: tls.domains.iter().map(ToString::to_string).collect(),
            source,
            from,
            certificate: facts.map(|facts| CertificateView::of(facts, now)),
            served_serial,
            next_renewal,
            failures: failures.count,
            last_failure: failures.reason,
        })
    }

    /// `cert renew`: with ACME, asks the CA for a certificate when one is
    /// due (or `force`), holding the store's lock so that one proxy asks at
    /// a time, stores it and installs it; a failure is recorded (for the
    /// backoff) and the certificate in use stays. With the user's files,
    /// installs them. `dry_run` says what would be done.
    pub async fn renew_certificate(
        &self,
        force: bool,
        dry_run: bool,
        lock_timeout: Duration,
    ) -> Result<Renewed> {
        let tls = self.tls()?;
        let now = SystemTime::now();
        let acme = match &tls.source {
            CertificateSource::Files { .. } => {
                let certificate = self
                    .wanted_certificate(tls)
                    .await?
                    .context("the certificate files are missing")?;
                let view = CertificateView::of(certificate.facts(), now);
                let installed = match dry_run {
                    true => None,
                    false => Some(self.install_certificate(&certificate).await?),
                };
                return Ok(Renewed {
                    action: if dry_run {
                        "would_install"
                    } else {
                        "installed"
                    },
                    reason:
                        "the certificate is the user's (tls.certificate_file), not issued by ACME"
                            .into(),
                    certificate: Some(view),
                    installed,
                });
            }
            CertificateSource::Acme(acme) => acme,
        };
        let lock = self.lock(lock_timeout).await?;
        let current = self.stored_certificate().await?;
        let mut failures: FailureState = self.load_meta(FAILURES).await?;
        let facts = current.as_ref().map(CertifiedKey::facts);
        let reason = match renewal::decide(facts, &tls.domains, &failures.failures(), now) {
            Renewal::Now(due) => describe(due).to_string(),
            Renewal::At(_) if force => "forced with --force".to_string(),
            Renewal::At(at) => {
                lock.release().await;
                let installed = match (&current, dry_run) {
                    (Some(current), false) => self.sync_certificate_to(current).await?,
                    _ => None,
                };
                return Ok(Renewed {
                    action: "not_due",
                    reason: format!("not due before {}", rfc3339(at)),
                    certificate: facts.map(|facts| CertificateView::of(facts, now)),
                    installed,
                });
            }
        };
        if dry_run {
            return Ok(Renewed {
                action: "would_issue",
                reason,
                certificate: facts.map(|facts| CertificateView::of(facts, now)),
                installed: None,
            });
        }
        let issued = match self.issue(acme, tls, &lock).await {
            Ok(issued) => issued,
            Err(err) => {
                metrics::certificate_issuance(false);
                let retry_after = err
                    .downcast_ref::<crate::acme::AcmeError>()
                    .and_then(|err| err.retry_after());
                let mut recorded = failures.failures();
                recorded.record(now, retry_after);
                failures.count = recorded.count;
                failures.last = Some(unix_seconds(now));
                failures.retry_after = recorded.retry_after.map(unix_seconds);
                failures.reason = Some(format!("{err:#}"));
                if let Err(save) = self.save_meta(FAILURES, &failures, &lock).await {
                    tracing::warn!("cannot record the failed attempt: {save:#}");
                }
                let kept = match facts {
                    Some(facts) => {
                        format!("the certificate in use (serial {}) stays", facts.serial)
                    }
                    None => "HAProxy keeps the self-signed stand-in".to_string(),
                };
                let err = err.context(format!(
                    "no new certificate was issued, so {kept}; the next attempt waits {}",
                    humantime::format_duration(renewal::backoff(failures.count))
                ));
                self.record([Change::done(
                    Kind::CertificateRenewed,
                    Vec::new(),
                    format!("failed: {err:#}"),
                )
                .with_severity(Severity::Error)])
                    .await;
                return Err(err);
            }
        };
        metrics::certificate_issuance(true);
        self.record([Change::done(
            Kind::CertificateRenewed,
            Vec::new(),
            format!(
                "issued ({reason}): serial {}, not after {}",
                issued.facts().serial,
                humantime::format_rfc3339_seconds(issued.facts().not_after)
            ),
        )])
        .await;
        self.store
            .write_secret(CERTIFICATE, &issued.bundle_pem(), &lock)
            .await?;
        self.save_meta(FAILURES, &FailureState::default(), &lock)
            .await?;
        lock.release().await;
        let installed = self.install_certificate(&issued).await?;
        Ok(Renewed {
            action: "issued",
            reason,
            certificate: Some(CertificateView::of(issued.facts(), now)),
            installed: Some(installed),
        })
    }

    /// Asks the CA for a certificate for the domains, answering its HTTP-01
    /// challenges from HAProxy's map; the caller holds the store's lock.
    async fn issue(
        &self,
        acme: &crate::acme::AcmeSettings,
        tls: &TlsSettings,
        lock: &StoreLock,
    ) -> Result<CertifiedKey> {
        let (Some(runtime), Some(files)) = (self.runtime(), &self.config.haproxy.tls) else {
            bail!(
                "HAProxy answers the CA's HTTP-01 challenge from a map it is given through its admin socket; set haproxy_socket"
            );
        };
        // HAProxy must run the config that answers challenges.
        haproxy::ensure_tls_files(&self.config.haproxy)?;
        let key = match self.store.read_meta(ACCOUNT_KEY).await? {
            Some(pem) => AccountKey::from_pem(&pem)?,
            None => {
                let key = AccountKey::generate()?;
                self.store
                    .write_secret(ACCOUNT_KEY, &key.to_pem(), lock)
                    .await?;
                key
            }
        };
        let client = Acme::connect(acme, &key).await?;
        let answers = MapAnswers {
            ctx: self,
            lock,
            runtime,
            map: &files.challenge_map,
        };
        Ok(client.issue(&tls.domains, &answers).await?)
    }

    /// The certificate in the store, checked; None before the first.
    async fn stored_certificate(&self) -> Result<Option<CertifiedKey>> {
        let Some(pem) = self.store.read_meta(CERTIFICATE).await? else {
            return Ok(None);
        };
        CertifiedKey::from_pem(&pem).map(Some).with_context(|| {
            format!(
                "the certificate kept in {} is unusable; run doproxy cert renew --force to have a new one issued",
                self.store.describe()
            )
        })
    }

    /// The certificate HAProxy should serve: the store's (ACME), or the
    /// user's files, checked.
    async fn wanted_certificate(&self, tls: &TlsSettings) -> Result<Option<CertifiedKey>> {
        match &tls.source {
            CertificateSource::Acme(_) => self.stored_certificate().await,
            CertificateSource::Files { certificate, key } => {
                let read = |path: &Path, what: &str| {
                    std::fs::read_to_string(path).with_context(|| {
                        format!(
                            "cannot read tls.{what} {}; check the path and its permissions",
                            path.display()
                        )
                    })
                };
                let pem = format!(
                    "{}\n{}",
                    read(certificate, "certificate_file")?,
                    read(key, "key_file")?
                );
                let certified = CertifiedKey::from_pem(&pem).with_context(|| {
                    format!(
                        "tls.certificate_file {} with tls.key_file {} is not a usable certificate",
                        certificate.display(),
                        key.display()
                    )
                })?;
                if !certified.facts().covers(&tls.domains) {
                    tracing::warn!(
                        "the certificate in {} is for {}, not every name of tls.domains",
                        certificate.display(),
                        certified.facts().domains.join(", ")
                    );
                }
                Ok(Some(certified))
            }
        }
    }

    /// Writes the certificate the store or the user's files hold to the
    /// file HAProxy's config names, when it holds another: before a config
    /// is checked and loaded, so a reload or restart serves it. Failing to
    /// read it leaves the file as it is (and says so).
    pub async fn write_certificate_file(&self) {
        let (Some(tls), Some(files)) = (&self.config.tls, &self.config.haproxy.tls) else {
            return;
        };
        let written = async {
            let Some(wanted) = self.wanted_certificate(tls).await? else {
                return Ok(());
            };
            let bundle = wanted.bundle_pem();
            if std::fs::read_to_string(&files.certificate_file)
                .ok()
                .as_deref()
                != Some(&bundle)
            {
                atomic_file::write_for(&files.certificate_file, bundle.as_bytes(), Readers::Owner)?;
            }
            anyhow::Ok(())
        };
        if let Err(err) = written.await {
            tracing::warn!(
                "HAProxy's certificate file {} is left as it is: {err:#}",
                files.certificate_file.display()
            );
        }
    }

    /// Installs the certificate the store or the user's files hold when
    /// HAProxy serves another (for `watch`, on every proxy); None when it
    /// serves it already, or there is none yet.
    pub async fn sync_certificate(&self) -> Result<Option<Installed>> {
        let Some(tls) = &self.config.tls else {
            return Ok(None);
        };
        match self.wanted_certificate(tls).await? {
            Some(wanted) => self.sync_certificate_to(&wanted).await,
            None => Ok(None),
        }
    }

    async fn sync_certificate_to(&self, wanted: &CertifiedKey) -> Result<Option<Installed>> {
        let Some(files) = &self.config.haproxy.tls else {
            return Ok(None);
        };
        let serial = &wanted.facts().serial;
        let on_disk = std::fs::read_to_string(&files.certificate_file)
            .ok()
            .and_then(|pem| CertificateFacts::from_pem(&pem).ok())
            .map(|facts| facts.serial);
        let served = match self.runtime() {
            Some(runtime) => runtime
                .certificate_serial(&files.certificate_file)
                .await
                .unwrap_or(None),
            None => on_disk.clone(),
        };
        if on_disk.as_ref() == Some(serial) && served.as_ref() == Some(serial) {
            return Ok(None);
        }
        self.install_certificate(wanted).await.map(Some)
    }

    /// Writes `certificate` to the file HAProxy's config names (so that a
    /// restart serves it), then makes HAProxy serve it through its admin
    /// socket; reloads when that fails, and says so.
    pub async fn install_certificate(&self, certificate: &CertifiedKey) -> Result<Installed> {
        let files =
            self.config.haproxy.tls.as_ref().context(
                "the HAProxy settings have no HTTPS part; this is a bug, please report it",
            )?;
        let bundle = certificate.bundle_pem();
        atomic_file::write_for(&files.certificate_file, bundle.as_bytes(), Readers::Owner)?;
        let facts = certificate.facts();
        metrics::certificate_expiry(&facts.domains, unix_seconds(facts.not_after));
        let why = match self.runtime() {
            Some(runtime) => match runtime
                .replace_certificate(&files.certificate_file, &bundle, &facts.serial)
                .await
            {
                Ok(()) => {
                    tracing::info!("HAProxy serves certificate {} (no reload)", facts.serial);
                    return Ok(Installed::Runtime);
                }
                Err(err) => format!("{err:#}"),
            },
            None => "haproxy_socket is not set".to_string(),
        };
        tracing::warn!(
            "installing certificate {} through HAProxy's admin socket failed ({why}); reloading HAProxy instead",
            facts.serial
        );
        let entries = self.entries(None).await?;
        self.apply(&entries, Reload::Always, false)
            .await
            .context("the new certificate is in place but HAProxy did not reload")?;
        Ok(Installed::Reload { why })
    }

    fn runtime(&self) -> Option<Runtime<'_>> {
        Runtime::of(&self.config.haproxy)
    }
}

fn describe(due: Due) -> &'static str {
    match due {
        Due::Missing => "no certificate yet",
        Due::SelfSigned => "only a self-signed certificate so far",
        Due::DomainsChanged => "the certificate lacks a name of tls.domains",
        Due::Renewal => "two thirds of its lifetime have passed",
        Due::Expired => "it has expired",
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn unix(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}
