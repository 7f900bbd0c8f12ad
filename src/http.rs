//! The HTTP client setup every outgoing connection shares: the DigitalOcean
//! API, the metadata service, droplet readiness checks, etcd.

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
