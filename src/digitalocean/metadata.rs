//! The droplet metadata service (169.254.169.254 on a droplet): where the
//! proxy droplet learns its own public address to bind HAProxy's frontend,
//! and its droplet ID and name, to claim the reserved IP for itself.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;

use crate::http::BodyError;

/// Off a droplet the service does not exist; give up quickly.
const TIMEOUT: Duration = Duration::from_secs(2);

/// This droplet's ID and name. Failover cannot work without them, so
/// failures say so.
pub async fn droplet_identity(metadata_url: &str) -> anyhow::Result<(u64, String)> {
    let fix = "failover runs on a proxy droplet; check metadata_url";
    let id = text(metadata_url, "id").await.with_context(|| {
        format!("cannot learn this droplet's ID from the metadata service at {metadata_url}; {fix}")
    })?;
    let id = id.trim().parse().with_context(|| {
        format!("the metadata service at {metadata_url} gave no droplet ID but {id:?}; {fix}")
    })?;
    let name = text(metadata_url, "hostname")
        .await
        .map(|name| name.trim().to_string())
        .unwrap_or_default();
    Ok((id, name))
}

/// One value of the service, `/metadata/v1/<path>`, as text.
async fn text(metadata_url: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("{metadata_url}/metadata/v1/{path}");
    let response = crate::http::builder()
        .timeout(TIMEOUT)
        .build()?
        .get(&url)
        .send()
        .await?
        .error_for_status()?;
    match crate::http::read_body(response).await {
        Ok(body) => Ok(String::from_utf8_lossy(&body).into_owned()),
        Err(BodyError::Transport(err)) => Err(err.into()),
        Err(BodyError::TooLarge) => anyhow::bail!("{}", crate::http::TOO_LARGE),
    }
}

/// An IPv4 address of this droplet the metadata service knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// Its public address.
    Public,
    /// The address on its public interface where a reserved IP's traffic
    /// arrives.
    Anchor,
}

impl Address {
    fn path(self) -> &'static str {
        match self {
            Address::Public => "interfaces/public/0/ipv4/address",
            Address::Anchor => "interfaces/public/0/anchor_ipv4/address",
        }
    }

    /// Where doproxy remembers it: `<haproxy_cfg_file>.<suffix>`.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Address::Public => "public-ip",
            Address::Anchor => "anchor-ip",
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Address::Public => "public IPv4",
            Address::Anchor => "anchor IPv4",
        })
    }
}

/// This droplet's `address`, or None when the metadata service does not
/// answer in time (not on a droplet) or answers something else.
pub async fn ipv4(metadata_url: &str, address: Address) -> Option<Ipv4Addr> {
    let text = text(metadata_url, address.path()).await.ok()?;
    match text.trim().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            tracing::warn!("the metadata service at {metadata_url} gave no {address}");
            None
        }
    }
}
