//! API failures as a type, so callers can tell "retry" from "give up" from
//! "the droplet is already gone", and users get one sentence saying what to do.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the DigitalOcean API refused the token (401 Unauthorized); set a valid token in $DIGITALOCEAN_ACCESS_TOKEN or the token key of doproxy.yml"
    )]
    Unauthorized,

    #[error("the DigitalOcean API has no such resource (404 Not Found)")]
    NotFound,

    #[error(
        "the DigitalOcean API rejected the request ({status}): {message}; fix the setting it names and retry"
    )]
    Rejected { status: u16, message: String },

    #[error(
        "the DigitalOcean API is rate-limiting this token (429 Too Many Requests); wait a while and retry"
    )]
    RateLimited { retry_after: Option<Duration> },

    #[error(
        "the DigitalOcean API failed ({status}): {message}; retry later, or check https://status.digitalocean.com"
    )]
    Server { status: u16, message: String },

    #[error(
        "no answer from the DigitalOcean API at {url}: {reason}; check api_url and the network, then retry"
    )]
    Transport {
        url: String,
        reason: String,
        /// True when the request never left this machine (connection refused,
        /// DNS failure): it certainly had no effect.
        unsent: bool,
    },

    #[error(
        "the DigitalOcean API sent an answer doproxy cannot read: {0}; retry, and report a bug if it persists"
    )]
    Malformed(String),
}

impl ApiError {
    /// Errors worth trying again: rate limits, server faults (but not 501, which
    /// never changes), timeouts and dropped connections.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::RateLimited { .. } | ApiError::Transport { .. } => true,
            ApiError::Server { status, .. } => *status != 501,
            _ => false,
        }
    }

    /// True when the failed request certainly changed nothing on the server,
    /// so even a create may be sent again.
    pub fn had_no_effect(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. } | ApiError::Transport { unsent: true, .. }
        )
    }

    /// How long the API asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    pub(super) fn from_transport(url: &str, err: &reqwest::Error) -> ApiError {
        let reason = if err.is_timeout() {
            "the request timed out".to_string()
        } else if err.is_connect() {
            "could not connect".to_string()
        } else {
            "the connection was closed before an answer arrived".to_string()
        };
        ApiError::Transport {
            url: url.to_string(),
            reason,
            unsent: err.is_connect(),
        }
    }
}
