//! Certificates from an ACME CA (RFC 8555: Let's Encrypt, or any other)
//! proved with the HTTP-01 challenge. The protocol is instant-acme's; this
//! layer adds the account key a caller keeps, the challenge answers handed
//! to whoever serves port 80 (HAProxy, through its runtime API), bounded
//! waits, the CA's rate limits, and one-sentence errors saying which domain
//! failed and why. It knows nothing of doproxy's config or commands.

#[cfg(test)]
mod tests;
mod transport;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, Problem,
    RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::certificate::{CertificateError, CertifiedKey, Domain};
use transport::{Transport, TransportError};

/// Let's Encrypt's production directory, and its staging one (untrusted
/// certificates, generous rate limits: for trying a setup out).
const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The directory URL a setting names: `letsencrypt` (the default) and
/// `staging` (or `letsencrypt-staging`) stand for Let's Encrypt's; anything
/// else is a URL.
pub fn directory_url(setting: &str) -> &str {
    match setting {
        "letsencrypt" => LETS_ENCRYPT,
        "staging" | "letsencrypt-staging" => LETS_ENCRYPT_STAGING,
        url => url,
    }
}

/// How often the order's state is asked for at first while the CA
/// validates or signs; each wait is half again as long as the one before.
const FIRST_POLL: Duration = Duration::from_millis(250);

/// The problem type of a CA's rate limit.
const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// What the ACME layer needs to know, and nothing else.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The CA's directory URL (https).
    pub directory_url: String,
    /// Where the CA sends expiry and policy mail, if anywhere.
    pub contact_email: Option<String>,
    /// CA certificates (PEM) to trust for the ACME server itself instead of
    /// the system's: private CAs, test CAs such as Pebble.
    pub ca_file: Option<PathBuf>,
    /// How long one issuance may take, validation and signing included.
    pub timeout: Duration,
}

/// Serves the answers to the CA's HTTP-01 challenges: the CA fetches
/// `http://<domain>/.well-known/acme-challenge/<token>` and expects the key
/// authorization as the body. Tokens and key authorizations are checked
/// base64url text (and one dot) before they get here.
pub trait ChallengeAnswers {
    /// Answers `token` with `key_authorization` everywhere the CA may ask.
    fn publish(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> impl Future<Output = anyhow::Result<()>>;

    /// Stops answering `token`.
    fn withdraw(&self, token: &str) -> impl Future<Output = anyhow::Result<()>>;
}

/// Why an issuance failed, for the caller to decide what next: back off
/// until `retry_after`, report, or fix a setting.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(
        "cannot read the ACME server's CA file {path}: {reason}; point the setting at a PEM file of CA certificates"
    )]
    CaFile { path: PathBuf, reason: String },
    #[error("the ACME account key is not usable: {0}; remove it to have a new account made")]
    AccountKey(String),
    #[error(
        "the ACME directory URL {0:?} is not https://; use the CA's directory URL, such as {LETS_ENCRYPT}"
    )]
    NotHttps(String),
    #[error("no domain to issue a certificate for; list at least one")]
    NoDomains,
    #[error("{0:?} is not an email address for the CA to write to; fix the contact email")]
    Contact(String),
    #[error(
        "cannot reach the ACME server at {url}: {reason}; check the directory URL and that this machine reaches it"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "the ACME server at {url} is not trusted ({reason}); if it uses a private or test CA, give that CA's certificate as the ACME CA file"
    )]
    Untrusted { url: String, reason: String },
    #[error("the CA refused {action}: {problem}; fix what it names, or try again later")]
    Refused {
        action: &'static str,
        problem: String,
    },
    #[error(
        "the CA's rate limit holds back {action} for now: {problem}; try again {}",
        retry_after.map_or("later".to_string(), |t| format!("after {}", humantime::format_rfc3339_seconds(t)))
    )]
    RateLimited {
        action: &'static str,
        problem: String,
        retry_after: Option<SystemTime>,
    },
    #[error(
        "the CA could not validate {domain}: {problem}; check that {domain} resolves to this proxy and that port 80 reaches HAProxy"
    )]
    ChallengeFailed { domain: String, problem: String },
    #[error("could not publish the answer to the CA's challenge for {domain}: {reason}")]
    Publish { domain: String, reason: String },
    #[error("the CA did not finish {action} within {}; it may be busy, try again later", humantime::format_duration(*after))]
    TimedOut {
        action: &'static str,
        after: Duration,
    },
    #[error("the CA answered {action} with something unusable: {reason}")]
    BadAnswer {
        action: &'static str,
        reason: String,
    },
    #[error("cannot make the certificate request: {0}")]
    Request(String),
    #[error("the certificate the CA issued {0}")]
    WrongCertificate(String),
}

impl AcmeError {
    /// When the CA said to come back, for a rate limit.
    pub fn retry_after(&self) -> Option<SystemTime> {
        match self {
            AcmeError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The ACME account's private key (ECDSA P-256, PKCS#8 PEM). Made once and
/// kept by the caller (0600): the key is the account, at any CA, so a lost
/// account (a CA's reset, a new directory URL) is made again from it.
pub struct AccountKey(PrivatePkcs8KeyDer<'static>);

impl AccountKey {
    pub fn generate() -> Result<AccountKey, AcmeError> {
        let (_, der) = instant_acme::Key::generate_pkcs8()
            .map_err(|err| AcmeError::AccountKey(err.to_string()))?;
        Ok(AccountKey(der))
    }

    /// Reads a key written by `to_pem`.
    pub fn from_pem(pem: &str) -> Result<AccountKey, AcmeError> {
        let block = pem::parse(pem).map_err(|err| AcmeError::AccountKey(err.to_string()))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(AcmeError::AccountKey(format!(
                "it is a {:?} block, not a PKCS#8 PRIVATE KEY",
                block.tag()
            )));
        }
        let key = AccountKey(PrivatePkcs8KeyDer::from(block.into_contents()));
        key.signing_key()?;
        Ok(key)
    }

    pub fn to_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", self.0.secret_pkcs8_der()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    fn signing_key(&self) -> Result<instant_acme::Key, AcmeError> {
        instant_acme::Key::from_pkcs8_der(self.0.clone_key())
            .map_err(|err| AcmeError::AccountKey(format!("{err} (an ECDSA P-256 key is needed)")))
    }
}

/// An account at a CA, ready to order certificates.
pub struct Acme {
    account: Account,
    transport: Transport,
    timeout: Duration,
}

impl Acme {
    /// Finds the account of `key` at the CA, or makes it (agreeing to the
    /// CA's terms of service), and sets its contact email.
    pub async fn connect(settings: &AcmeSettings, key: &AccountKey) -> Result<Acme, AcmeError> {
        if !settings.directory_url.starts_with("https://") {
            return Err(AcmeError::NotHttps(settings.directory_url.clone()));
        }
        let contact = match &settings.contact_email {
            Some(email) => Some(mailto(email)?),
            None => None,
        };
        let roots = match &settings.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|err| AcmeError::CaFile {
                path: path.clone(),
                reason: err.to_string(),
            })?),
            None => None,
        };
        let transport = Transport::new(roots.as_deref()).map_err(|reason| AcmeError::CaFile {
            path: settings.ca_file.clone().unwrap_or_default(),
            reason,
        })?;
        let (account, _) = Account::builder_with_http(Box::new(transport.clone()))
            .create_from_key(
                (key.signing_key()?, PrivateKeyDer::Pkcs8(key.0.clone_key())),
                settings.directory_url.clone(),
            )
            .await
            .map_err(|err| failure("the ACME account", err, &transport, settings.timeout))?;
        if let Some(contact) = contact {
            account.update_contacts(&[&contact]).await.map_err(|err| {
                failure(
                    "the account's contact email",
                    err,
                    &transport,
                    settings.timeout,
                )
            })?;
        }
        Ok(Acme {
            account,
            transport,
            timeout: settings.timeout,
        })
    }

    /// Orders a certificate for `domains` (at least one; the first is the
    /// certificate's subject), answers the HTTP-01 challenges through
    /// `answers`, and returns the chain with its new ECDSA P-256 key.
    /// Answers published are withdrawn whatever happens; the whole takes
    /// at most the settings' timeout.
    pub async fn issue(
        &self,
        domains: &[Domain],
        answers: &impl ChallengeAnswers,
    ) -> Result<CertifiedKey, AcmeError> {
        if domains.is_empty() {
            return Err(AcmeError::NoDomains);
        }
        let mut published = Vec::new();
        let issued =
            tokio::time::timeout(self.timeout, self.order(domains, answers, &mut published)).await;
        for token in published {
            if let Err(err) = answers.withdraw(&token).await {
                tracing::warn!("could not withdraw the answer to ACME challenge {token}: {err:#}");
            }
        }
        issued.unwrap_or(Err(AcmeError::TimedOut {
            action: "the issuance",
            after: self.timeout,
        }))
    }

    async fn order(
        &self,
        domains: &[Domain],
        answers: &impl ChallengeAnswers,
        published: &mut Vec<String>,
    ) -> Result<CertifiedKey, AcmeError> {
        let failed = |action, err| failure(action, err, &self.transport, self.timeout);
        let identifiers: Vec<Identifier> = domains
            .iter()
            .map(|domain| Identifier::Dns(domain.to_string()))
            .collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|err| failed("the certificate order", err))?;

        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|err| failed("the order's authorizations", err))?;
            let domain = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                status => {
                    return Err(AcmeError::ChallengeFailed {
                        domain,
                        problem: format!("its authorization is {status:?}"),
                    });
                }
            }
            let mut challenge =
                authorization
                    .challenge(ChallengeType::Http01)
                    .ok_or(AcmeError::BadAnswer {
                        action: "the certificate order",
                        reason: format!("it offers no HTTP-01 challenge for {domain}"),
                    })?;
            let key_authorization = challenge.key_authorization();
            if !is_token(&challenge.token) || !is_key_authorization(key_authorization.as_str()) {
                return Err(AcmeError::BadAnswer {
                    action: "the certificate order",
                    reason: format!("the challenge token for {domain} is not base64url text"),
                });
            }
            // Noted first: a publish cut short by the timeout is withdrawn too.
            published.push(challenge.token.clone());
            answers
                .publish(&challenge.token, key_authorization.as_str())
                .await
                .map_err(|err| AcmeError::Publish {
                    domain: domain.clone(),
                    reason: format!("{err:#}"),
                })?;
            challenge
                .set_ready()
                .await
                .map_err(|err| failed("the challenge", err))?;
        }

        let validated = order.poll_ready(&self.poll_policy()).await;
        match validated {
            Ok(OrderStatus::Ready) => {}
            Ok(_) | Err(instant_acme::Error::Api(_)) => {
                return Err(why_invalid(&mut order, domains, validated.err()).await);
            }
            Err(err) => return Err(failed("the validation", err)),
        }

        let generate = |err: rcgen::Error| AcmeError::Request(err.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let names: Vec<String> = domains.iter().map(Domain::to_string).collect();
        let csr = rcgen::CertificateParams::new(names)
            .and_then(|params| params.serialize_request(&key))
            .map_err(generate)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|err| failed("the signing", err))?;
        let chain = order
            .poll_certificate(&self.poll_policy())
            .await
            .map_err(|err| failed("the signing", err))?;
        let certified = CertifiedKey::from_pem(&format!("{chain}\n{}", key.serialize_pem()))
            .map_err(|err: CertificateError| {
                AcmeError::WrongCertificate(format!("cannot be read: {err}"))
            })?;
        if !certified.facts().covers(domains) {
            return Err(AcmeError::WrongCertificate(format!(
                "names {} instead of {}",
                certified.facts().domains.join(", "),
                names_of(domains)
            )));
        }
        Ok(certified)
    }

    /// Waits between polls growing by half, bounded by the issuance timeout
    /// (which bounds the whole as well); the CA's Retry-After is obeyed.
    fn poll_policy(&self) -> RetryPolicy {
        RetryPolicy::new()
            .initial_delay(FIRST_POLL)
            .backoff(1.5)
            .timeout(self.timeout)
    }
}

/// The failed challenge of an invalid order as an error naming its domain
/// and the CA's reason.
async fn why_invalid(
    order: &mut instant_acme::Order,
    domains: &[Domain],
    error: Option<instant_acme::Error>,
) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let domain = authorization.identifier().to_string();
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        if let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
            return AcmeError::ChallengeFailed {
                domain,
                problem: describe(problem),
            };
        }
    }
    AcmeError::ChallengeFailed {
        domain: names_of(domains),
        problem: match error {
            Some(instant_acme::Error::Api(problem)) => describe(&problem),
            _ => "the order became invalid".to_string(),
        },
    }
}

/// An instant-acme failure during `action` as one of ours; `timeout` is
/// the bound a poll ran into.
fn failure(
    action: &'static str,
    err: instant_acme::Error,
    transport: &Transport,
    timeout: Duration,
) -> AcmeError {
    match err {
        instant_acme::Error::Api(problem) => {
            let retry_after = transport.take_retry_after();
            if problem.r#type.as_deref() == Some(RATE_LIMITED) || problem.status == Some(503) {
                AcmeError::RateLimited {
                    action,
                    problem: describe(&problem),
                    retry_after,
                }
            } else {
                AcmeError::Refused {
                    action,
                    problem: describe(&problem),
                }
            }
        }
        instant_acme::Error::Other(err) => match err.downcast::<TransportError>() {
            Ok(failed) if failed.tls => AcmeError::Untrusted {
                url: failed.url,
                reason: failed.reason,
            },
            Ok(failed) => AcmeError::Unreachable {
                url: failed.url,
                reason: failed.reason,
            },
            Err(other) => AcmeError::BadAnswer {
                action,
                reason: other.to_string(),
            },
        },
        instant_acme::Error::Timeout(_) => AcmeError::TimedOut {
            action,
            after: timeout,
        },
        other => AcmeError::BadAnswer {
            action,
            reason: other.to_string(),
        },
    }
}

/// A problem document in words: its detail (or type), and the detail of
/// each subproblem with the name it concerns.
fn describe(problem: &Problem) -> String {
    let mut text = problem
        .detail
        .clone()
        .or_else(|| problem.r#type.clone())
        .unwrap_or_else(|| "no reason given".to_string());
    for sub in &problem.subproblems {
        let name = sub
            .identifier
            .as_ref()
            .map(|id| format!("{}: ", id.authorized(false)))
            .unwrap_or_default();
        let detail = sub
            .detail
            .as_deref()
            .or(sub.r#type.as_deref())
            .unwrap_or("");
        text.push_str(&format!("; {name}{detail}"));
    }
    text
}

fn names_of(domains: &[Domain]) -> String {
    domains
        .iter()
        .map(Domain::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `mailto:` of a plain address: one `@`, no spaces, commas or other URL
/// syntax a CA would read as a second contact.
fn mailto(email: &str) -> Result<String, AcmeError> {
    let plain = email
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, ',' | ';' | '?' | '&' | '<' | '>' | '"'));
    match email.split_once('@') {
        Some((user, host))
            if plain && !user.is_empty() && host.contains('.') && !host.contains('@') =>
        {
            Ok(format!("mailto:{email}"))
        }
        _ => Err(AcmeError::Contact(email.to_string())),
    }
}

/// RFC 8555 tokens: base64url, at least 128 bits' worth.
fn is_token(token: &str) -> bool {
    token.len() >= 22
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `<token>.<account key thumbprint>`, both base64url.
fn is_key_authorization(text: &str) -> bool {
    text.split_once('.').is_some_and(|(token, thumbprint)| {
        is_token(token)
            && !thumbprint.is_empty()
            && thumbprint
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}
