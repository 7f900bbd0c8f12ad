//! A small etcd v3 client for the shared inventory, speaking the JSON gateway
//! every etcd 3.4+ server runs on its client port (`POST /v3/kv/range` and
//! friends). doproxy already has reqwest; a gRPC client would add tonic,
//! prost and their dependencies to the build for the handful of calls needed
//! here: ranges, transactions, leases, the lock service and watches.
//!
//! The gateway speaks protobuf's JSON: keys and values are base64, 64-bit
//! integers are strings, and fields holding their zero value (`false`, `0`,
//! an empty list, the `PUT` event type) are left out. Watches and lease
//! keepalives are streams of newline-separated `{"result": ...}` objects.
//!
//! Every request asks for a member that has a leader (gRPC metadata
//! `hasleader`, sent as a `Grpc-Metadata-hasleader` header), so a member cut
//! off from its cluster refuses rather than serving old data or a watch that
//! never fires.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use crate::http::{BodyError, MAX_ANSWER, is_tls_failure, root_cause};

/// How long one ordinary request may take. Lock and watch requests wait
/// for events instead and have no such limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Short, so a dead endpoint costs little before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections idle this long are not reused: one that went silently dead
/// (a dropped NAT entry, a half-open link) would hang the next request for
/// REQUEST_TIMEOUT. Requests within one step still share a connection.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC metadata, through the gateway: only a member with a leader answers.
const REQUIRE_LEADER: (&str, &str) = ("Grpc-Metadata-hasleader", "true");

pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// PEM files for etcd served over `https://`. Without a CA file the system's
/// roots are trusted; a client certificate needs both of its files.
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
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

/// What can go wrong talking to etcd, each a sentence a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "etcd at {endpoint} has no leader, so it is cut off from the rest of its cluster; list the cluster's other members in etcd_endpoints, or bring the cluster back to a quorum"
    )]
    NoLeader { endpoint: String },

    #[error("cannot reach etcd at {endpoints} ({reason}); check etcd_endpoints and that etcd runs")]
    Unreachable { endpoints: String, reason: String },

    #[error(
        "etcd at {endpoint} did not answer within {seconds} s; check that etcd is healthy, then retry"
    )]
    Timeout { endpoint: String, seconds: u64 },

    #[error(
        "lost the connection to etcd at {endpoint} ({reason}); check that etcd runs, then retry"
    )]
    Disconnected { endpoint: String, reason: String },

    #[error(
        "TLS with etcd at {endpoint} failed ({reason}); check etcd_ca_file, etcd_cert_file and etcd_key_file"
    )]
    Tls { endpoint: String, reason: String },

    #[error(
        "etcd at {endpoint} requires a user name and password; set etcd_username and etcd_password"
    )]
    AuthRequired { endpoint: String },

    #[error(
        "etcd at {endpoint} refused the password of user {username}; check etcd_username and etcd_password"
    )]
    AuthFailed { endpoint: String, username: String },

    #[error(
        "etcd at {endpoint} has authentication disabled, yet etcd_username is set; enable authentication in etcd or remove etcd_username and etcd_password"
    )]
    AuthDisabled { endpoint: String },

    #[error(
        "etcd at {endpoint} refused the request ({message}); check etcd's health and the user's permissions, then retry"
    )]
    Server { endpoint: String, message: String },

    #[error(
        "etcd at {endpoint} sent an answer doproxy cannot read ({reason}); check that it runs etcd 3.4 or newer"
    )]
    Malformed { endpoint: String, reason: String },
}

/// A key and its value, as a range read them.
#[derive(Debug, Deserialize)]
pub struct KeyValue {
    #[serde(deserialize_with = "base64_text")]
    pub key: String,
    #[serde(default, deserialize_with = "base64_bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub create_revision: i64,
    /// The lease the key is attached to; 0 for none.
    #[serde(default, deserialize_with = "int64")]
    pub lease: i64,
}

/// The keys under a prefix, all read at one revision.
pub struct Range {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
}

/// A condition a transaction checks before it writes anything.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key exists (its create revision is above zero).
    KeyExists(String),
    /// The key does not exist (its create revision is zero).
    KeyMissing(String),
    /// The key exists and is attached to this lease.
    LeaseIs(String, i64),
    /// The key exists and holds exactly this value.
    ValueIs(String, Vec<u8>),
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Put),
    Delete(String),
    /// Every key starting with this prefix.
    DeletePrefix(String),
    /// Every key from the first (included) to the second (excluded).
    DeleteRange(String, String),
}

/// One key a transaction writes, optionally attached to a lease.
#[derive(Debug, Clone)]
pub struct Put {
    pub key: String,
    pub value: Vec<u8>,
    pub lease: Option<i64>,
}

/// Keeps a lease alive from a background task until dropped, and knows when
/// the lease can no longer be counted on.
pub struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    health: Arc<Mutex<LeaseHealth>>,
}

/// What the renewals have learnt about a lease.
#[derive(Debug, Clone, Copy)]
struct LeaseHealth {
    /// When the lease runs out unless renewed again, counted from when the
    /// last successful grant or renewal was sent, so it errs on the early side.
    expires: Instant,
    /// etcd said the lease no longer exists.
    gone: bool,
}

/// Why a lease, and whatever it holds, is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    #[error("etcd says its lease has run out")]
    Gone,
    #[error("no renewal of its lease succeeded in time")]
    NotRenewed,
}

/// A watch on the keys under a prefix, read change by change.
pub struct Watch {
    endpoint: String,
    /// The open event stream; `None` once etcd has ended it.
    stream: Option<reqwest::Response>,
    /// Bytes received but not yet split into lines.
    buffer: LineBuffer,
    /// News received but not yet handed out.
    pending: VecDeque<WatchUpdate>,
}

/// What a watch saw next.
pub enum WatchUpdate {
    Changes(ChangeBatch),
    /// etcd had already compacted the revisions the watch should have
    /// started from, so changes were missed; the watch has ended.
    Compacted {
        compact_revision: i64,
    },
}

/// Every key one transaction wrote or deleted, and its revision.
pub struct ChangeBatch {
    pub revision: i64,
    pub changes: Vec<Change>,
}

/// One key a transaction wrote (its new value) or deleted (None).
pub struct Change {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize)]
struct RangeResponse {
    header: Header,
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Deserialize)]
struct LeaseGrantResponse {
    #[serde(rename = "ID", deserialize_with = "int64")]
    id: i64,
}

#[derive(Deserialize)]
struct LeaseKeepAliveResponse {
    /// Seconds left; absent (zero) when the lease no longer exists.
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

#[derive(Deserialize)]
struct LockResponse {
    #[serde(deserialize_with = "base64_text")]
    key: String,
}

#[derive(Deserialize)]
struct AuthenticateResponse {
    token: String,
}

/// One line of a streamed answer: a result, or the error that ended it.
#[derive(Deserialize)]
struct StreamLine<T> {
    result: Option<T>,
    error: Option<StreamError>,
}

#[derive(Deserialize)]
struct StreamError {
    message: String,
}

#[derive(Deserialize)]
struct WatchResponse {
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<WatchEvent>,
}

#[derive(Deserialize)]
struct WatchEvent {
    /// `DELETE`, or absent for a put (the zero value).
    #[serde(rename = "type", default)]
    kind: String,
    kv: EventKeyValue,
}

#[derive(Deserialize)]
struct EventKeyValue {
    #[serde(deserialize_with = "base64_text")]
    key: String,
    #[serde(default, deserialize_with = "base64_bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    mod_revision: i64,
}

/// The body of a failed unary request.
#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl Client {
    pub fn new(
        endpoints: Vec<String>,
        credentials: Option<Credentials>,
        tls: &TlsFiles,
    ) -> anyhow::Result<Client> {
        if endpoints.is_empty() {
            bail!("no etcd endpoints are set; list at least one in etcd_endpoints");
        }
        let endpoints: Vec<String> = endpoints
            .into_iter()
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
        if let Some(ca_file) = &tls.ca_file {
            let pem = read_pem(ca_file, "etcd_ca_file")?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                anyhow::anyhow!(
                    "etcd CA file {} holds no usable certificate ({err}); check etcd_ca_file",
                    ca_file.display()
                )
            })?;
            builder = builder.tls_certs_only(roots);
        }
        match (&tls.cert_file, &tls.key_file) {
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
        let body = json!({"key": base64::encode(key.as_bytes()), "revision": revision.to_string()});
        let response: RangeResponse = self.call("/v3/kv/range", &body).await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order, at one revision.
    pub async fn range_prefix(&self, prefix: &str) -> Result<Range, EtcdError> {
        let body = json!({
            "key": base64::encode(prefix.as_bytes()),
            "range_end": base64::encode(&prefix_end(prefix)),
        });
        let response: RangeResponse = self.call("/v3/kv/range", &body).await?;
        Ok(Range {
            kvs: response.kvs,
            revision: response.header.revision,
        })
    }

    /// Makes the writes `ops` in one transaction if every compare holds;
    /// returns whether they did (and so whether it wrote).
    pub async fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|compare| match compare {
                Compare::KeyExists(key) => json!({
                    "key": base64::encode(key.as_bytes()),
                    "target": "CREATE",
                    "result": "GREATER",
                    "create_revision": "0",
                }),
                Compare::KeyMissing(key) => json!({
                    "key": base64::encode(key.as_bytes()),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": "0",
                }),
                Compare::LeaseIs(key, lease) => json!({
                    "key": base64::encode(key.as_bytes()),
                    "target": "LEASE",
                    "result": "EQUAL",
                    "lease": lease.to_string(),
                }),
                Compare::ValueIs(key, value) => json!({
                    "key": base64::encode(key.as_bytes()),
                    "target": "VALUE",
                    "result": "EQUAL",
                    "value": base64::encode(value),
                }),
            })
            .collect();
        let delete_range = |from: &str, to: &[u8]| {
            json!({"request_delete_range": {
                "key": base64::encode(from.as_bytes()),
                "range_end": base64::encode(to),
            }})
        };
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put(put) => json!({"request_put": {
                    "key": base64::encode(put.key.as_bytes()),
                    "value": base64::encode(&put.value),
                    "lease": put.lease.unwrap_or(0).to_string(),
                }}),
                Op::Delete(key) => {
                    json!({"request_delete_range": {"key": base64::encode(key.as_bytes())}})
                }
                Op::DeletePrefix(prefix) => delete_range(prefix, &prefix_end(prefix)),
                Op::DeleteRange(from, to) => delete_range(from, to.as_bytes()),
            })
            .collect();
        let body = json!({"compare": compare, "success": success});
        let response: TxnResponse = self.call("/v3/kv/txn", &body).await?;
        Ok(response.succeeded)
    }

    /// A new lease of `ttl`; returns its ID.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let body = json!({"TTL": ttl.as_secs().to_string()});
        let response: LeaseGrantResponse = self.call("/v3/lease/grant", &body).await?;
        Ok(response.id)
    }

    /// Renews `lease` every third of `ttl` until the returned guard drops, so
    /// a renewal that fails is tried again well before the lease runs out.
    /// `granted` is when the grant request was sent.
    pub fn keep_alive(&self, lease: i64, ttl: Duration, granted: Instant) -> KeepAlive {
        let health = Arc::new(Mutex::new(LeaseHealth {
            expires: granted + ttl,
            gone: false,
        }));
        let client = self.clone();
        let learnt = health.clone();
        let task = tokio::spawn(async move {
            let mut renewals = tokio::time::interval_at(granted + ttl / 3, ttl / 3);
            renewals.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                renewals.tick().await;
                let sent = Instant::now();
                let renewed = client.renew_lease(lease).await;
                let mut health = learnt.lock().unwrap_or_else(|e| e.into_inner());
                match renewed {
                    Ok(Some(left)) => health.expires = sent + left,
                    Ok(None) => {
                        health.gone = true;
                        tracing::warn!(
                            "etcd lease {lease:x} has run out, so the lock it held is lost and this run's writes will be refused"
                        );
                        return;
                    }
                    Err(err) => tracing::warn!("cannot renew etcd lease {lease:x}: {err}"),
                }
            }
        });
        KeepAlive { task, health }
    }

    /// One keepalive round trip: the time the lease has left, or None if
    /// it is gone.
    async fn renew_lease(&self, lease: i64) -> Result<Option<Duration>, EtcdError> {
        // The gateway answers each request object in the body with one line;
        // a body of one object gets one line, then the stream ends.
        let body = json!({"ID": lease.to_string()});
        let line: StreamLine<LeaseKeepAliveResponse> =
            self.call("/v3/lease/keepalive", &body).await?;
        match (line.result, line.error) {
            (Some(result), _) => Ok(u64::try_from(result.ttl)
                .ok()
                .filter(|&ttl| ttl > 0)
                .map(Duration::from_secs)),
            (None, error) => Err(EtcdError::refused(
                &self.endpoint(),
                error.map_or("empty keepalive answer".to_string(), |e| e.message),
            )),
        }
    }

    /// Ends `lease` at once, deleting every key attached to it.
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), EtcdError> {
        let body = json!({"ID": lease.to_string()});
        self.call::<Value>("/v3/lease/revoke", &body).await?;
        Ok(())
    }

    /// Waits, without a time limit, until this client holds the lock `name`
    /// on behalf of `lease`; returns the owner key, which exists exactly as
    /// long as the lock is held (etcd's lock service keeps one key per
    /// holder and waiter under `<name>/`, attached to its lease).
    pub async fn lock(&self, name: &str, lease: i64) -> Result<String, EtcdError> {
        let body = json!({"name": base64::encode(name.as_bytes()), "lease": lease.to_string()});
        let response: LockResponse = self.call_within("/v3/lock/lock", &body, None).await?;
        Ok(response.key)
    }

    /// Gives up a lock, by its owner key.
    pub async fn unlock(&self, key: &str) -> Result<(), EtcdError> {
        let body = json!({"key": base64::encode(key.as_bytes())});
        self.call::<Value>("/v3/lock/unlock", &body).await?;
        Ok(())
    }

    /// Watches every key under `prefix`, starting with the changes made at
    /// `start_revision`.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": base64::encode(prefix.as_bytes()),
            "range_end": base64::encode(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let mut tries = self.inner.endpoints.len();
        let (mut watch, mut cancelled) = loop {
            let opened = match self.open_watch(&body).await {
                Ok(mut watch) => watch.confirm_created().await.map(|c| (watch, c)),
                Err(err) => Err(err),
            };
            match opened {
                Err(EtcdError::NoLeader { endpoint }) if tries > 1 => {
                    self.pass_over(&endpoint);
                    tries -= 1;
                }
                Ok((watch, Some(reason))) if reason.contains("no leader") && tries > 1 => {
                    self.pass_over(&watch.endpoint);
                    tries -= 1;
                }
                opened => break opened?,
            }
        };
        // The gateway checks the token only when a watch starts, and reports
        // an expired one as a cancelled watch rather than a 401.
        if cancelled
            .as_deref()
            .is_some_and(|reason| reason.contains("invalid auth token"))
            && self.inner.credentials.is_some()
        {
            self.authenticate().await?;
            watch = self.open_watch(&body).await?;
            cancelled = watch.confirm_created().await?;
        }
        match cancelled {
            Some(reason) => Err(watch.cancelled(reason)),
            None => Ok(watch),
        }
    }

    async fn open_watch(&self, body: &Value) -> Result<Watch, EtcdError> {
        let (endpoint, response) = self.send("/v3/watch", body, None).await?;
        let status = response.status();
        if !status.is_success() {
            let body = read_body(&endpoint, response).await?;
            return Err(error_answer(&endpoint, status, &body));
        }
        Ok(Watch {
            endpoint,
            stream: Some(response),
            buffer: LineBuffer::default(),
            pending: VecDeque::new(),
        })
    }

    /// The endpoint requests go to first, for messages.
    fn endpoint(&self) -> String {
        self.inner.endpoints[self.inner.current.load(Ordering::Relaxed)].clone()
    }

    /// A request with the usual time limit, its answer read as `T`.
    async fn call<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, EtcdError> {
        self.call_within(path, body, Some(REQUEST_TIMEOUT)).await
    }

    /// A request, its answer read as `T`; an endpoint without a leader
    /// refused it untouched, so it goes to the next endpoint instead.
    async fn call_within<T: DeserializeOwned>(
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
    fn pass_over(&self, endpoint: &str) {
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
    async fn send(
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

    async fn authenticate(&self) -> Result<String, EtcdError> {
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

impl KeepAlive {
    /// Why the lease is lost, if it is as far as this run knows: etcd said
    /// so, or no renewal succeeded within its time to live.
    pub fn lost(&self) -> Option<LeaseLost> {
        let health = *self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.lost(Instant::now())
    }

    /// How long the lease lasts at least without another renewal, as far as
    /// this run knows; zero once it is lost.
    pub fn time_left(&self) -> Duration {
        let health = *self.health.lock().unwrap_or_else(|e| e.into_inner());
        match health.lost(Instant::now()) {
            Some(_) => Duration::ZERO,
            None => health.expires.saturating_duration_since(Instant::now()),
        }
    }
}

impl LeaseHealth {
    fn lost(&self, now: Instant) -> Option<LeaseLost> {
        if self.gone {
            Some(LeaseLost::Gone)
        } else if now >= self.expires {
            Some(LeaseLost::NotRenewed)
        } else {
            None
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    /// The next transaction's changes, or the news that the watch missed
    /// changes to compaction. Waits as long as nothing changes.
    pub async fn next(&mut self) -> Result<WatchUpdate, EtcdError> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Ok(update);
            }
            let response = self.next_response().await?;
            if let Some(reason) = self.absorb(response) {
                return Err(self.cancelled(reason));
            }
        }
    }

    /// Reads etcd's first answer, which confirms the watch; returns the
    /// reason if etcd cancelled it instead.
    async fn confirm_created(&mut self) -> Result<Option<String>, EtcdError> {
        let response = self.next_response().await?;
        Ok(self.absorb(response))
    }

    /// Queues what `response` says; returns the reason if etcd cancelled
    /// the watch for anything but compaction.
    fn absorb(&mut self, response: WatchResponse) -> Option<String> {
        if response.canceled {
            self.stream = None;
            if response.compact_revision == 0 {
                return Some(response.cancel_reason);
            }
            self.pending.push_back(WatchUpdate::Compacted {
                compact_revision: response.compact_revision,
            });
            return None;
        }
        // One response may carry several transactions (when catching up
        // from an old revision), but never splits one.
        for events in response
            .events
            .chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision)
        {
            self.pending.push_back(WatchUpdate::Changes(ChangeBatch {
                revision: events[0].kv.mod_revision,
                changes: events
                    .iter()
                    .map(|e| Change {
                        key: e.kv.key.clone(),
                        value: (e.kind != "DELETE").then(|| e.kv.value.clone()),
                    })
                    .collect(),
            }));
        }
        None
    }

    fn cancelled(&self, reason: String) -> EtcdError {
        if reason.contains("user name is empty") {
            return EtcdError::AuthRequired {
                endpoint: self.endpoint.clone(),
            };
        }
        EtcdError::refused(&self.endpoint, format!("watch cancelled: {reason}"))
    }

    async fn next_response(&mut self) -> Result<WatchResponse, EtcdError> {
        loop {
            let line = self.buffer.take_line(MAX_ANSWER).map_err(|()| {
                self.stream = None;
                EtcdError::Malformed {
                    endpoint: self.endpoint.clone(),
                    reason: format!(
                        "a line of its watch stream longer than {} MiB, far beyond any real one",
                        MAX_ANSWER >> 20
                    ),
                }
            })?;
            if let Some(line) = line {
                let line: StreamLine<WatchResponse> =
                    serde_json::from_slice(&line).map_err(|err| EtcdError::Malformed {
                        endpoint: self.endpoint.clone(),
                        reason: err.to_string(),
                    })?;
                return match (line.result, line.error) {
                    (Some(response), _) => Ok(response),
                    (None, error) => Err(EtcdError::refused(
                        &self.endpoint,
                        error.map_or("an empty watch answer".to_string(), |e| e.message),
                    )),
                };
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(EtcdError::Disconnected {
                    endpoint: self.endpoint.clone(),
                    reason: "the watch has ended".to_string(),
                });
            };
            match stream.chunk().await {
                Ok(Some(chunk)) => self.buffer.push(&chunk),
                Ok(None) => {
                    self.stream = None;
                    return Err(EtcdError::Disconnected {
                        endpoint: self.endpoint.clone(),
                        reason: "etcd closed the watch".to_string(),
                    });
                }
                Err(err) => {
                    self.stream = None;
                    return Err(transport_error(&self.endpoint, &err));
                }
            }
        }
    }
}

/// The watch stream read so far, handed out line by line.
#[derive(Default)]
struct LineBuffer {
    bytes: Vec<u8>,
    /// The bytes before this hold no line end: each byte is looked at once,
    /// however many chunks a long line comes in.
    searched: usize,
}

impl LineBuffer {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
    }

    /// The first whole line, taken out; None while it is incomplete, and
    /// an error once more than `max` bytes came without a line end.
    fn take_line(&mut self, max: usize) -> Result<Option<Vec<u8>>, ()> {
        let end = self.bytes[self.searched..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|at| self.searched + at);
        match end {
            Some(end) if end <= max => {
                self.searched = 0;
                Ok(Some(self.bytes.drain(..=end).collect()))
            }
            None if self.bytes.len() <= max => {
                self.searched = self.bytes.len();
                Ok(None)
            }
            _ => {
                *self = LineBuffer::default();
                Err(())
            }
        }
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
async fn read_body(endpoint: &str, response: reqwest::Response) -> Result<Vec<u8>, EtcdError> {
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

/// etcd's answer to a failed request, as an error.
fn error_answer(endpoint: &str, status: StatusCode, body: &[u8]) -> EtcdError {
    let message = serde_json::from_slice::<ErrorBody>(body).map_or_else(
        |_| format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()),
        |error| error.message,
    );
    if message.contains("user name is empty") {
        return EtcdError::AuthRequired {
            endpoint: endpoint.to_string(),
        };
    }
    EtcdError::refused(endpoint, message)
}

impl EtcdError {
    /// etcd's refusal with `message`: a member without a leader (which
    /// refuses before doing anything, as every request asks for a leader)
    /// is told apart, so another endpoint can be tried.
    fn refused(endpoint: &str, message: String) -> EtcdError {
        let endpoint = endpoint.to_string();
        if message.contains("no leader") {
            return EtcdError::NoLeader { endpoint };
        }
        EtcdError::Server { endpoint, message }
    }
}

fn transport_error(endpoint: &str, err: &reqwest::Error) -> EtcdError {
    if is_tls_failure(err) {
        return EtcdError::Tls {
            endpoint: endpoint.to_string(),
            reason: root_cause(err),
        };
    }
    if err.is_timeout() {
        return EtcdError::Timeout {
            endpoint: endpoint.to_string(),
            seconds: REQUEST_TIMEOUT.as_secs(),
        };
    }
    EtcdError::Disconnected {
        endpoint: endpoint.to_string(),
        reason: root_cause(err),
    }
}

fn read_pem(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|err| anyhow::anyhow!("cannot read {} ({err}); check {setting}", path.display()))
}

/// The `range_end` that makes a range cover every key starting with
/// `prefix`: the prefix with its last byte raised by one.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or nothing): "\0" means to the end of the keyspace.
    vec![0]
}

/// The gateway's int64 fields, which arrive as JSON strings.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    String::deserialize(deserializer)?
        .parse()
        .map_err(D::Error::custom)
}

fn base64_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    base64::decode(&String::deserialize(deserializer)?).map_err(D::Error::custom)
}

fn base64_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let bytes = base64_bytes(deserializer)?;
    String::from_utf8(bytes).map_err(D::Error::custom)
}

/// Standard base64 with padding, as the gateway writes it: thirty lines
/// instead of another dependency.
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let group = chunk
                .iter()
                .enumerate()
                .fold(0u32, |group, (i, &b)| group | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    text.push(char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize]));
                } else {
                    text.push('=');
                }
            }
        }
        text
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
        let (mut bits, mut count) = (0u32, 0);
        for c in text.trim_end_matches('=').bytes() {
            let value = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or_else(|| format!("{:?} is not base64", char::from(c)))?;
            bits = bits << 6 | value as u32;
            count += 6;
            if count >= 8 {
                count -= 8;
                bytes.push((bits >> count) as u8);
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_are_taken_whole_and_bounded() {
        let mut buffer = LineBuffer::default();
        buffer.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(buffer.take_line(16), Ok(Some(b"{\"a\":1}\n".to_vec())));
        assert_eq!(buffer.take_line(16), Ok(None));
        buffer.push(b":2}\n{}\n");
        assert_eq!(buffer.take_line(16), Ok(Some(b"{\"b\":2}\n".to_vec())));
        assert_eq!(buffer.take_line(16), Ok(Some(b"{}\n".to_vec())));
        let mut endless = LineBuffer::default();
        for _ in 0..4 {
            endless.push(b"xxxx");
            assert_eq!(endless.take_line(16), Ok(None));
        }
        endless.push(b"x");
        assert_eq!(endless.take_line(16), Err(()));
        let mut late = LineBuffer::default();
        late.push(&[vec![b'x'; 20], b"\n".to_vec()].concat());
        assert_eq!(late.take_line(16), Err(()));
    }

    #[test]
    fn base64_round_trips_every_padding() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("/doproxy/web/droplets/", "L2RvcHJveHkvd2ViL2Ryb3BsZXRzLw=="),
        ] {
            assert_eq!(base64::encode(plain.as_bytes()), encoded);
            assert_eq!(base64::decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64::decode(&base64::encode(&all)).unwrap(), all);
        assert!(base64::decode("Zm9v!").is_err());
    }

    #[test]
    fn a_lease_is_lost_once_gone_or_past_its_time() {
        let now = Instant::now();
        let health = LeaseHealth {
            expires: now + Duration::from_secs(30),
            gone: false,
        };
        assert_eq!(health.lost(now), None);
        assert_eq!(
            health.lost(now + Duration::from_secs(30)),
            Some(LeaseLost::NotRenewed)
        );
        let gone = LeaseHealth {
            gone: true,
            ..health
        };
        assert_eq!(gone.lost(now), Some(LeaseLost::Gone));
    }

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
        assert_eq!(prefix_end(""), [0]);
    }
}
