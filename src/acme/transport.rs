//! instant-acme's requests carried by doproxy's own reqwest client (rustls
//! with ring, a CA file of the user's choosing, bounded answers), and the
//! Retry-After a rate-limited or unavailable CA sent, kept so the error can
//! say when to come back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use crate::http::{BodyError, TOO_LARGE, is_tls_failure, read_body, root_cause};

/// How long one request to the CA may take, and its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport handed to instant-acme; clones share the Retry-After.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
}

/// A request that got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct TransportError {
    pub url: String,
    pub reason: String,
    /// The server's certificate was not trusted, or TLS failed otherwise.
    pub tls: bool,
}

impl Transport {
    /// Trusting the system's CAs, or only those in `roots` (PEM) when given.
    pub fn new(roots: Option<&[u8]>) -> Result<Transport, String> {
        // The CA is a public service: through the operator's HTTP proxy
        // when the environment names one, as the DigitalOcean API is.
        let mut builder = crate::http::api_builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(pem) = roots {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|err| format!("it holds no usable certificate ({err})"))?;
            if roots.is_empty() {
                return Err("it holds no certificate".into());
            }
            builder = builder.tls_certs_only(roots);
        }
        let client = builder
            .build()
            .map_err(|err| format!("cannot set up the HTTP client ({err})"))?;
        Ok(Transport {
            client,
            retry_after: Arc::default(),
        })
    }

    /// Keeps the Retry-After of a 429 (rate limit) or 503 (unavailable)
    /// answer, or that there was none.
    pub fn note_retry_after(&self, status: http::StatusCode, headers: &http::HeaderMap) {
        if matches!(status.as_u16(), 429 | 503) {
            let retry_after = headers
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            *self.retry_after.lock().unwrap_or_else(|e| e.into_inner()) = retry_after;
        }
    }

    /// The Retry-After of the latest 429 or 503 answer, taken.
    pub fn take_retry_after(&self) -> Option<SystemTime> {
        self.retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    async fn send(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<BytesResponse, instant_acme::Error> {
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await.map(|body| body.to_bytes());
        let url = parts.uri.to_string();
        let failed = |reason: String, tls: bool| {
            instant_acme::Error::Other(Box::new(TransportError {
                url: url.clone(),
                reason,
                tls,
            }))
        };
        let response = self
            .client
            .request(parts.method, &url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|err| failed(root_cause(&err), is_tls_failure(&err)))?;
        let status = response.status();
        let headers = response.headers().clone();
        self.note_retry_after(status, &headers);
        let body = read_body(response).await.map_err(|err| match err {
            BodyError::Transport(err) => failed(root_cause(&err), false),
            BodyError::TooLarge => failed(TOO_LARGE.to_string(), false),
        })?;
        let mut answer = http::Response::new(());
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        let (parts, ()) = answer.into_parts();
        Ok(BytesResponse {
            parts,
            body: Box::new(Bytes::from(body)),
        })
    }
}

impl HttpClient for Transport {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let transport = self.clone();
        Box::pin(async move { transport.send(request).await })
    }
}

/// A Retry-After value (seconds, or an HTTP date) as a time.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(now + Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(now + Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
