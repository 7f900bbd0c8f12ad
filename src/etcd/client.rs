//! The connection to one etcd cluster: endpoints tried in turn, the auth
//! token, TLS, and one request at a time read as JSON. Keys and values
//! (`get`, `range_prefix`, `txn`) are here; leases, locks, watches and the
//! election build on it in their own files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::{EtcdError, error_answer, transport_error};
use super::wire::{
    AuthenticateResponse, Compare, KeyValue, Op, Range, RangeResponse, TxnResponse, encode,
    prefix_end,
};
use crate::http::{BodyError, is_tls_failure, root_cause};

/// How long one ordinary request may take. Lock and watch requests wait
/// for events instead and have no such limit.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Short, so a dead endpoint costs little before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections idle this long are not reused: one that went silently dead
/// (a dropped NAT entry, a half-open link) would hang the next request for
/// REQUEST_TIMEOUT. Requests within one step still share a connection.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC metadata, through the gateway: only a member with a leader answers.
const REQUIRE_LEADER: (&str, &str) = ("Grpc-Metadata-hasleader", "true");

/// How to reach the cluster: etcd_endpoints, the user and password to log
/// in with, and the PEM files for `https://`. No Debug: it holds the
/// password.
pub struct Settings {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate; needs its key file too.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

struct Credentials {
    username: String,
    password: String,
}

/// A client for one etcd cluster; clones share connections and the auth token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last; requests start there.
    current: AtomicUsize,
    credentials: Option<Credentials>,
    /// etcd's token for `credentials`, once authenticated.
    token: Mutex<Option<String>>,
}

impl Client {
    /// A client for the cluster `settings` name; nothing is sent yet.
    pub fn new(settings: &Settings) -> anyhow::Result<Client> {
        let credentials = match (&settings.username, &settings.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            (None, None) => None,
            _ => bail!(
                "etcd_username and etcd_password go together; set both to log in to etcd, or neither"
            ),
        };
        let endpoints = &settings.endpoints;
        if endpoints.is_empty() {
            bail!("no etcd endpoints are set; list at least one in etcd_endpoints");
        }
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        if let Some(bad) = endpoints
            .iter()
            .find(|e| !e.starts_with("http://") && !e.starts_with("https://"))
        {
            bail!("etcd endpoint {bad:?} lacks http:// or https://; fix it in etcd_endpoints");
        }
        let mut builder = crate::http::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT);
        if let Some(ca_file) = &settings.ca_file {
            let pem = read_pem(ca_file, "etcd_ca_file")?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                anyhow::anyhow!(
                    "etcd CA file {} holds no usable certificate ({err}); check etcd_ca_file",
                    ca_file.display()
                )
            })?;
            builder = builder.tls_certs_only(roots);
        }
        match (&settings.cert_file, &settings.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let mut pem = read_pem(cert_file, "etcd_cert_file")?;
                pem.extend(read_pem(key_file, "etcd_key_file")?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|err| {
                    anyhow::anyhow!(
                        "etcd client certificate {} and key {} do not make a usable pair ({err}); check etcd_cert_file and etcd_key_file",
                        cert_file.display(),
                        key_file.display()
                    )
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => bail!(
                "etcd_cert_file and etcd_key_file go together; set both for a client certificate, or neither"
            ),
        }
        let http = builder
            .build()
            .map_err(|err| anyhow::anyhow!("cannot set up the HTTP client for etcd: {err}"))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                current: AtomicUsize::new(0),
                credentials,
                token: Mutex::new(None),
            }),
        })
    }

    /// One key's value, if the key exists.
    /// One key's value, if the key exists.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        Ok(self.get_key(key).await?.map(|kv| kv.value))
    }

    /// One key with its value and lease, if the key exists.
    pub async fn get_key(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        self.get_key_at(key, 0).await
    }

    /// One key as it was at `revision` (0: now), if it existed then.
    pub async fn get_key_at(
        &self,
        key: &str,
        revision: i64,
    ) -> Result<Option<KeyValue>, EtcdError> {
        let body = json!({"key": encode(key.as_bytes()), "revision": revision.to_string()});
        let response: RangeResponse = self.call("/v3/kv/range", &body).await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order, at one revision.
    pub async fn range_prefix(&self, prefix: &str) -> Result<Range, EtcdError> {
        let body = json!({
            "key": encode(prefix.as_bytes()),
            "range_end": encode(&prefix_end(prefix)),
        });
        let response: RangeResponse = self.call("/v3/kv/range", &body).await?;
        Ok(Range {
            kvs: response.kvs,
            revision: response.header.revision,
        })
    }

    /// The keys (without values) starting with `prefix`, in key order.
    pub async fn keys_prefix(&self, prefix: &str) -> Result<Vec<String>, EtcdError> {
        let body = json!({
            "key": encode(prefix.as_bytes()),
            "range_end": encode(&prefix_end(prefix)),
            "keys_only": true,
        });
        let response: RangeResponse = self.call("/v3/kv/range", &body).await?;
        Ok(response.kvs.into_iter().map(|kv| kv.key).collect())
    }

    /// Makes the writes `ops` in one transaction if every compare holds;
    /// returns whether they did (and so whether it wrote).
    pub async fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compares.iter().map(Compare::to_json).collect();
        let success: Vec<Value> = ops.iter().map(Op::to_json).collect();
        let body = json!({"compare": compare, "success": success});
        let response: TxnResponse = self.call("/v3/kv/txn", &body).await?;
        Ok(response.succeeded)
    }

    /// How many endpoints there are to try.
    pub(super) fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }

    /// Whether it logs in (etcd_username and etcd_password are set).
    pub(super) fn logs_in(&self) -> bool {
        self.inner.credentials.is_some()
    }

    /// The endpoint requests go to first, for messages.
    pub(super) fn endpoint(&self) -> String {
        self.inner.endpoints[self.inner.current.load(Ordering::Relaxed)].clone()
    }

    /// A request with the usual time limit, its answer read as `T`.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        self.call_within(path, body, Some(REQUEST_TIMEOUT)).await
    }

    /// A request, its answer read as `T`; an endpoint without a leader
    /// refused it untouched, so it goes to the next endpoint instead.
    pub(super) async fn call_within<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<T, EtcdError> {
        let mut tries = self.inner.endpoints.len();
        loop {
            let (endpoint, response) = self.send(path, body, timeout).await?;
            match read_json(&endpoint, response).await {
                Err(EtcdError::NoLeader { endpoint }) if tries > 1 => {
                    self.pass_over(&endpoint);
                    tries -= 1;
                }
                answer => return answer,
            }
        }
    }

    /// Starts requests at the endpoint after `endpoint`, which has no
    /// leader.
    pub(super) fn pass_over(&self, endpoint: &str) {
        let endpoints = &self.inner.endpoints;
        if let Some(index) = endpoints.iter().position(|e| e == endpoint) {
            let next = (index + 1) % endpoints.len();
            tracing::warn!(
                "etcd at {endpoint} has no leader; trying {} instead",
                endpoints[next]
            );
            self.inner.current.store(next, Ordering::Relaxed);
        }
    }

    /// Sends a request with the auth token, authenticating first if needed
    /// and once more if etcd says the token expired (simple tokens lapse
    /// after `--auth-token-ttl`, 5 minutes by default, unused).
    pub(super) async fn send(
        &self,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<(String, reqwest::Response), EtcdError> {
        let token = self.token().await?;
        let (endpoint, response) = self.post(path, body, token.as_deref(), timeout).await?;
        if response.status() == StatusCode::UNAUTHORIZED && self.inner.credentials.is_some() {
            let token = self.authenticate().await?;
            return self.post(path, body, Some(&token), timeout).await;
        }
        Ok((endpoint, response))
    }

    async fn token(&self) -> Result<Option<String>, EtcdError> {
        if self.inner.credentials.is_none() {
            return Ok(None);
        }
        let known = self.inner.token.lock().expect("token lock").clone();
        match known {
            Some(token) => Ok(Some(token)),
            None => self.authenticate().await.map(Some),
        }
    }

    pub(super) async fn authenticate(&self) -> Result<String, EtcdError> {
        let credentials = self
            .inner
            .credentials
            .as_ref()
            .expect("authenticate only with credentials");
        let body = json!({"name": credentials.username, "password": credentials.password});
        let (endpoint, response) = self
            .post("/v3/auth/authenticate", &body, None, Some(REQUEST_TIMEOUT))
            .await?;
        let token = match read_json::<AuthenticateResponse>(&endpoint, response).await {
            Ok(answer) => answer.token,
            Err(EtcdError::Server { message, .. }) if message.contains("authentication failed") => {
                return Err(EtcdError::AuthFailed {
                    endpoint,
                    username: credentials.username.clone(),
                });
            }
            Err(EtcdError::Server { message, .. })
                if message.contains("authentication is not enabled") =>
            {
                return Err(EtcdError::AuthDisabled { endpoint });
            }
            Err(err) => return Err(err),
        };
        *self.inner.token.lock().expect("token lock") = Some(token.clone());
        Ok(token)
    }

    /// POSTs to the endpoint that answered last, moving on to the next one
    /// only when a connection cannot be made: then the request certainly
    /// never arrived, so even a write is safe to send elsewhere.
    async fn post(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(String, reqwest::Response), EtcdError> {
        let endpoints = &self.inner.endpoints;
        let first = self.inner.current.load(Ordering::Relaxed);
        let mut reason = String::new();
        for index in (first..endpoints.len()).chain(0..first) {
            let endpoint = &endpoints[index];
            let mut request = self
                .inner
                .http
                .post(format!("{endpoint}{path}"))
                .header(REQUIRE_LEADER.0, REQUIRE_LEADER.1)
                .json(body);
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, token);
            }
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            match request.send().await {
                Ok(response) => {
                    self.inner.current.store(index, Ordering::Relaxed);
                    return Ok((endpoint.clone(), response));
                }
                Err(err) if err.is_connect() && !is_tls_failure(&err) => reason = root_cause(&err),
                Err(err) => return Err(transport_error(endpoint, &err)),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: endpoints.join(", "),
            reason,
        })
    }
}

/// Reads a whole answer: `T` on success, else etcd's error as a sentence.
async fn read_json<T: DeserializeOwned>(
    endpoint: &str,
    response: reqwest::Response,
) -> Result<T, EtcdError> {
    let status = response.status();
    let body = read_body(endpoint, response).await?;
    if !status.is_success() {
        return Err(error_answer(endpoint, status, &body));
    }
    serde_json::from_slice(&body).map_err(|err| EtcdError::Malformed {
        endpoint: endpoint.to_string(),
        reason: err.to_string(),
    })
}

/// A whole answer's body, at most MAX_ANSWER bytes.
pub(super) async fn read_body(
    endpoint: &str,
    response: reqwest::Response,
) -> Result<Vec<u8>, EtcdError> {
    crate::http::read_body(response)
        .await
        .map_err(|err| match err {
            BodyError::Transport(err) => transport_error(endpoint, &err),
            BodyError::TooLarge => EtcdError::Malformed {
                endpoint: endpoint.to_string(),
                reason: crate::http::TOO_LARGE.to_string(),
            },
        })
}

fn read_pem(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|err| anyhow::anyhow!("cannot read {} ({err}); check {setting}", path.display()))
}
