//! Everything that talks to DigitalOcean: the API v2 client, the droplet types
//! it returns, and the droplet metadata service.

mod client;
mod droplet;
mod error;
pub mod metadata;
pub mod reserved_ip;
mod retry;

pub use client::{Client, Deleted};
pub use droplet::{CreateRequest, Droplet};
pub use error::ApiError;
pub use retry::RetryPolicy;
