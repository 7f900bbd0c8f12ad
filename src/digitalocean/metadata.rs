//! The droplet metadata service (169.254.169.254 on a droplet): where the
//! proxy droplet learns its own public address to bind HAProxy's frontend.

use std::net::Ipv4Addr;
use std::time::Duration;

/// Off a droplet the service does not exist; give up quickly.
const TIMEOUT: Duration = Duration::from_secs(2);

/// This droplet's public IPv4, or None when the metadata service does not
/// answer in time (not on a droplet) or answers something else.
pub async fn public_ipv4(metadata_url: &str) -> Option<Ipv4Addr> {
    let url = format!("{metadata_url}/metadata/v1/interfaces/public/0/ipv4/address");
    let client = crate::http::builder().timeout(TIMEOUT).build().ok()?;
    let answer = client
        .get(&url)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    let text = answer.text().await.ok()?;
    match text.trim().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            tracing::warn!("the metadata service at {metadata_url} gave no IPv4 address");
            None
        }
    }
}
