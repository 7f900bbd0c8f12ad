//! The HTTP client setup every outgoing connection shares: the DigitalOcean
//! API, the metadata service, droplet readiness checks.

/// A reqwest builder with doproxy's User-Agent and TLS set up. reqwest is built
/// without a default crypto provider (see Cargo.toml), so ring is installed
/// first; that fails only when it is already installed, which is fine.
pub fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("doproxy/", env!("CARGO_PKG_VERSION")))
}
