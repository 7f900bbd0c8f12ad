//! Everything that talks to DigitalOcean: the API v2 client, the droplet types
//! it returns, and the droplet metadata service.

mod client;
mod droplet;
mod error;
pub mod metadata;
mod monitoring;
mod pages;
pub mod reserved_ip;
mod retry;
mod values;

pub use client::{ApiSettings, Client, Deleted, Observer};
pub use droplet::{CreateRequest, Droplet, Networks};
pub use error::ApiError;
pub use pages::list_requests;
pub use retry::RetryPolicy;
pub use values::{Image, SshKey, Token};
