//! The DigitalOcean client as the operations use it: every request and
//! retry it makes counted in doproxy's metrics.

use std::sync::Arc;

use anyhow::Result;

use crate::digitalocean::{ApiSettings, Client, Observer, Token};
use crate::metrics;

/// Counts the API's requests (by method and status) and retries.
struct Counted;

impl Observer for Counted {
    fn request(&self, method: &str, status: Option<u16>) {
        metrics::api_request(method, status);
    }

    fn retry(&self) {
        metrics::api_retry();
    }
}

/// A client of the API `settings` name, counted in the metrics.
pub fn client(settings: &ApiSettings, token: Token) -> Result<Client> {
    Client::new(settings, token, Arc::new(Counted))
}
