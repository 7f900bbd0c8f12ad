//! What can go wrong talking to etcd, each a sentence a user can act on,
//! and how a failed exchange becomes one.

use reqwest::StatusCode;

use super::client::REQUEST_TIMEOUT;
use super::wire::ErrorBody;
use crate::http::{is_tls_failure, root_cause};

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

/// etcd's answer to a failed request, as an error.
pub(super) fn error_answer(endpoint: &str, status: StatusCode, body: &[u8]) -> EtcdError {
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
    pub(super) fn refused(endpoint: &str, message: String) -> EtcdError {
        let endpoint = endpoint.to_string();
        if message.contains("no leader") {
            return EtcdError::NoLeader { endpoint };
        }
        EtcdError::Server { endpoint, message }
    }
}

pub(super) fn transport_error(endpoint: &str, err: &reqwest::Error) -> EtcdError {
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
