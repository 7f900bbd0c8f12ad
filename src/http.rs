//! The HTTP client setup every outgoing connection shares: the DigitalOcean
//! API, the metadata service, droplet readiness checks, etcd, the ACME CA;
//! the bound on how much of an answer is read; and what a failed request
//! says.

/// The most of one answer (or one line of etcd's watch stream, or one
/// answer on HAProxy's admin socket) doproxy reads: far beyond a real one
/// (a page of 200 droplets is about 1 MiB, `show stat` of 10,000 servers
/// about 4 MiB), yet a server that answers without end cannot use up the
/// memory.
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What an answer past MAX_ANSWER is called in messages.
pub const TOO_LARGE: &str = "an answer larger than 16 MiB, far beyond any real one";

/// Why an answer's body was not read.
pub enum BodyError {
    Transport(reqwest::Error),
    /// Longer than MAX_ANSWER.
    TooLarge,
}

/// The body of `response`, read chunk by chunk, up to MAX_ANSWER.
pub async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest builder connecting directly: the droplets' private addresses,
/// the metadata service's link-local one and the proxies' etcd are never
/// behind the operator's HTTP proxy, whatever `$HTTP_PROXY` says.
pub fn builder() -> reqwest::ClientBuilder {
    api_builder().no_proxy()
}

/// The builder for the DigitalOcean API, which may sit behind the HTTP proxy
/// the environment names (`$HTTPS_PROXY`, `$NO_PROXY`), as any public
/// service may: doproxy's User-Agent and TLS. reqwest is built without a
/// default crypto provider (see Cargo.toml), so ring is installed first;
/// that fails only when it is already installed, which is fine.
pub fn api_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("doproxy/", env!("CARGO_PKG_VERSION")))
}

/// Whether rustls failed the request: an untrusted server certificate, or
/// the server refusing ours (which TLS 1.3 reports only once the request is sent).
pub fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<rustls::Error>() {
            return true;
        }
        // io::Error hides the error it wraps from `source`.
        cause = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|err| err.get_ref())
        {
            Some(wrapped) => Some(wrapped),
            None => err.source(),
        };
    }
    false
}

/// The innermost error's text ("Connection refused (os error 111)"):
/// reqwest's own wrappers say little.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
