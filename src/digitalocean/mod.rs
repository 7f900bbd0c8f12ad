//! Everything that talks to DigitalOcean: the API v2 client, the droplet types
//! it returns, and the droplet metadata service.

mod client;
mod droplet;
mod error;
pub mod metadata;
mod retry;

pub use client::{Client, Deleted};
pub use droplet::{CreateRequest, Droplet};
pub use error::ApiError;
pub use retry::RetryPolicy;

/// A reqwest builder with doproxy's User-Agent and TLS set up. reqwest is built
/// without a default crypto provider (see Cargo.toml), so ring is installed
/// first; that fails only when it is already installed, which is fine.
fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("doproxy/", env!("CARGO_PKG_VERSION")))
}
