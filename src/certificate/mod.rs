//! HTTPS certificates as values: what a PEM chain says (names, issuer,
//! serial, validity), a chain with its key checked and re-encoded as clean
//! PEM before it goes to a file or HAProxy's socket, the self-signed
//! stand-in an HTTPS bind needs before the first certificate, and when to
//! renew. No I/O: the CA, the store and HAProxy are other layers.

pub mod domain;
pub mod renewal;

use std::fmt;
use std::time::{Duration, SystemTime};

use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

pub use domain::Domain;

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// PEM labels of the private keys HAProxy reads: PKCS#8, SEC1 (EC) and
/// PKCS#1 (RSA).
const KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error(
        "the certificate is not valid PEM ({0}); it must hold -----BEGIN CERTIFICATE----- blocks"
    )]
    Pem(String),
    #[error("the PEM text holds no certificate; it must start with the server's own certificate")]
    NoCertificate,
    #[error("certificate {index} of the chain cannot be read as X.509 ({reason})")]
    X509 { index: usize, reason: String },
    #[error("the PEM text holds no private key; give the certificate's key along with it")]
    NoKey,
    #[error("the PEM text holds {0} private keys; give only the certificate's own")]
    SeveralKeys(usize),
    #[error("the PEM text holds a {0:?} block, which is neither a certificate nor a private key")]
    Unexpected(String),
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

/// What a certificate says about itself (the first of a chain: the
/// server's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// DNS names of its Subject Alternative Names, as written there.
    pub domains: Vec<String>,
    /// The issuer's distinguished name (RFC 4514, e.g. `CN=R11,O=Let's Encrypt,C=US`).
    pub issuer: String,
    /// Upper-case hex without separators, as `openssl x509 -serial` and
    /// HAProxy's `show ssl cert` print it.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Issued by itself (issuer = subject): a stand-in, never one a CA made.
    pub self_signed: bool,
}

impl CertificateFacts {
    /// The facts of the first certificate in `pem`.
    pub fn from_pem(pem: &str) -> Result<CertificateFacts, CertificateError> {
        let blocks = parse_pem(pem)?;
        let leaf = blocks
            .iter()
            .find(|block| block.tag() == "CERTIFICATE")
            .ok_or(CertificateError::NoCertificate)?;
        CertificateFacts::from_der(leaf.contents(), 1)
    }

    fn from_der(der: &[u8], index: usize) -> Result<CertificateFacts, CertificateError> {
        let x509 = |reason: String| CertificateError::X509 { index, reason };
        let certificate = Certificate::from_der(der).map_err(|err| x509(err.to_string()))?;
        let tbs = certificate.tbs_certificate();
        let domains = match tbs
            .get_extension::<SubjectAltName>()
            .map_err(|err| x509(format!("its Subject Alternative Names: {err}")))?
        {
            Some((_, names)) => names
                .0
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DnsName(dns) => Some(dns.to_string()),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let serial = tbs
            .serial_number()
            .as_bytes()
            .iter()
            .skip_while(|byte| **byte == 0)
            .map(|byte| format!("{byte:02X}"))
            .collect::<String>();
        let validity = tbs.validity();
        Ok(CertificateFacts {
            domains,
            issuer: tbs.issuer().to_string(),
            serial: if serial.is_empty() {
                "00".into()
            } else {
                serial
            },
            not_before: validity.not_before.to_system_time(),
            not_after: validity.not_after.to_system_time(),
            self_signed: tbs.issuer() == tbs.subject(),
        })
    }

    /// Whole days until it expires at `now`; negative once expired.
    pub fn days_left(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(left) => (left.as_secs() / SECONDS_PER_DAY) as i64,
            Err(past) => -(past.duration().as_secs().div_ceil(SECONDS_PER_DAY) as i64),
        }
    }

    /// When two thirds of its lifetime have passed: the time to renew, as
    /// Let's Encrypt advises (day 60 of 90), leaving a third for retries.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime * 2 / 3
    }

    /// Whether it is valid for every domain in `wanted`.
    pub fn covers(&self, wanted: &[Domain]) -> bool {
        wanted
            .iter()
            .all(|domain| self.domains.iter().any(|name| domain.matches(name)))
    }
}

/// A certificate chain with its private key, checked and held as DER, so
/// that what leaves it is canonical PEM: no stray text, no blank line, no
/// CR, whatever the CA or the user handed in. The key is never shown by
/// Debug.
#[derive(Clone)]
pub struct CertifiedKey {
    chain: Vec<pem::Pem>,
    key: pem::Pem,
    facts: CertificateFacts,
}

impl CertifiedKey {
    /// Reads PEM text holding the chain (server's certificate first) and
    /// exactly one private key, in any order, as in HAProxy's `crt` files;
    /// give a chain and a key kept apart joined by a newline.
    pub fn from_pem(pem: &str) -> Result<CertifiedKey, CertificateError> {
        let mut chain = Vec::new();
        let mut keys = Vec::new();
        for block in parse_pem(pem)? {
            if block.tag() == "CERTIFICATE" {
                chain.push(block);
            } else if KEY_LABELS.contains(&block.tag()) {
                keys.push(block);
            } else {
                return Err(CertificateError::Unexpected(block.tag().to_string()));
            }
        }
        let facts = match chain.first() {
            Some(leaf) => CertificateFacts::from_der(leaf.contents(), 1)?,
            None => return Err(CertificateError::NoCertificate),
        };
        for (index, certificate) in chain.iter().enumerate().skip(1) {
            Certificate::from_der(certificate.contents()).map_err(|err| {
                CertificateError::X509 {
                    index: index + 1,
                    reason: err.to_string(),
                }
            })?;
        }
        let key = match keys.len() {
            0 => return Err(CertificateError::NoKey),
            1 => keys.remove(0),
            many => return Err(CertificateError::SeveralKeys(many)),
        };
        Ok(CertifiedKey { chain, key, facts })
    }

    /// A self-signed certificate for `domains` with a new ECDSA P-256 key:
    /// HAProxy refuses an HTTPS bind without a certificate, so this stands
    /// in until the CA's arrives. Browsers do not trust it, and renewal
    /// replaces it at once (it is self-signed).
    pub fn placeholder(domains: &[Domain]) -> Result<CertifiedKey, CertificateError> {
        let generate = |err: rcgen::Error| CertificateError::Generate(err.to_string());
        let names = domains.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "doproxy placeholder");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let certificate = params.self_signed(&key).map_err(generate)?;
        CertifiedKey::from_pem(&format!("{}\n{}", certificate.pem(), key.serialize_pem()))
    }

    pub fn facts(&self) -> &CertificateFacts {
        &self.facts
    }

    /// The chain, server's certificate first.
    #[cfg(test)]
    pub fn chain_pem(&self) -> String {
        encode(&self.chain)
    }

    /// The private key alone (keep it 0600).
    #[cfg(test)]
    pub fn key_pem(&self) -> String {
        encode(std::slice::from_ref(&self.key))
    }

    /// Chain then key in one text: HAProxy's `crt` file, and the payload of
    /// `set ssl cert`.
    pub fn bundle_pem(&self) -> String {
        let mut blocks = self.chain.clone();
        blocks.push(self.key.clone());
        encode(&blocks)
    }
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("facts", &self.facts)
            .field("chain", &self.chain.len())
            .field("key", &"(not shown)")
            .finish()
    }
}

fn parse_pem(text: &str) -> Result<Vec<pem::Pem>, CertificateError> {
    pem::parse_many(text).map_err(|err| CertificateError::Pem(err.to_string()))
}

/// The blocks one after the other, LF line endings, without the headers
/// or the blank lines between blocks `pem` would write: a blank line ends
/// the payload of a command on HAProxy's socket.
fn encode(blocks: &[pem::Pem]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    blocks
        .iter()
        .map(|block| pem::encode_config(&pem::Pem::new(block.tag(), block.contents()), config))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(names: &[&str]) -> Vec<Domain> {
        names.iter().map(|n| Domain::parse(n).unwrap()).collect()
    }

    /// A CA-issued chain (leaf, intermediate) and its key, made with rcgen:
    /// leaf valid 2026-01-01 to 2026-04-01 for two names.
    fn issued() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Test Intermediate");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf =
            rcgen::CertificateParams::new(vec!["site.test".into(), "www.site.test".into()])
                .unwrap();
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x9A, 0x0B]));
        leaf.not_before = rcgen::date_time_ymd(2026, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2026, 4, 1);
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        (leaf.pem(), ca_cert.pem(), key.serialize_pem())
    }

    fn at(days_after_2026: u64) -> SystemTime {
        // 2026-01-01T00:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + days_after_2026 * 86_400)
    }

    #[test]
    fn facts_of_the_first_certificate_of_a_chain() {
        let (leaf, intermediate, _) = issued();
        let facts = CertificateFacts::from_pem(&format!("{leaf}{intermediate}")).unwrap();
        assert_eq!(facts.domains, ["site.test", "www.site.test"]);
        assert_eq!(facts.issuer, "CN=Test Intermediate");
        assert_eq!(facts.serial, "9A0B");
        assert_eq!(facts.not_before, at(0));
        assert_eq!(facts.not_after, at(90));
        assert!(!facts.self_signed);
        assert_eq!(facts.days_left(at(0)), 90);
        assert_eq!(facts.days_left(at(89) + Duration::from_secs(1)), 0);
        assert_eq!(facts.days_left(at(91)), -1);
        assert_eq!(facts.renew_at(), at(60));
        assert!(facts.covers(&domains(&["www.site.test", "site.test"])));
        assert!(!facts.covers(&domains(&["site.test", "api.site.test"])));
    }

    #[test]
    fn a_chain_and_its_key_come_out_as_clean_pem_whatever_came_in() {
        let (leaf, intermediate, key) = issued();
        // CRLF, text around the blocks, blank lines, key first.
        let messy =
            format!("explanatory text\n\n{key}\n\n{leaf}{intermediate}").replace('\n', "\r\n");
        let certified = CertifiedKey::from_pem(&messy).unwrap();
        assert_eq!(certified.facts().serial, "9A0B");
        let bundle = certified.bundle_pem();
        assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(bundle.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(!bundle.contains('\r') && !bundle.contains("\n\n"));
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(
            bundle,
            format!("{}{}", certified.chain_pem(), certified.key_pem())
        );
        assert_eq!(
            CertifiedKey::from_pem(&bundle).unwrap().bundle_pem(),
            bundle
        );
        assert!(!format!("{certified:?}").contains("PRIVATE"));
    }

    #[test]
    fn pem_without_a_certificate_or_a_key_or_with_junk_is_refused() {
        let (leaf, _, key) = issued();
        let err = |pem: &str| CertifiedKey::from_pem(pem).unwrap_err();
        assert_eq!(err(&key), CertificateError::NoCertificate);
        assert_eq!(err(&leaf), CertificateError::NoKey);
        assert_eq!(
            err(&format!("{leaf}{key}{key}")),
            CertificateError::SeveralKeys(2)
        );
        assert_eq!(err(""), CertificateError::NoCertificate);
        let request =
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(
            err(&format!("{leaf}{request}{key}")),
            CertificateError::Unexpected("CERTIFICATE REQUEST".into())
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            err(&format!("{leaf}{garbage}{key}")),
            CertificateError::X509 { index: 2, .. }
        ));
        assert!(matches!(
            CertificateFacts::from_pem(
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"
            ),
            Err(CertificateError::Pem(_))
        ));
    }

    #[test]
    fn a_placeholder_is_self_signed_for_the_domains() {
        let wanted = domains(&["site.test", "www.site.test"]);
        let placeholder = CertifiedKey::placeholder(&wanted).unwrap();
        let facts = placeholder.facts();
        assert!(facts.self_signed);
        assert!(facts.covers(&wanted));
        assert_eq!(facts.issuer, "CN=doproxy placeholder");
        assert_ne!(
            CertifiedKey::placeholder(&wanted).unwrap().facts().serial,
            facts.serial
        );
    }
}
