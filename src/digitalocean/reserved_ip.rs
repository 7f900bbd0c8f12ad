//! Reserved IPs: which droplet holds one, and moving it with an `assign`
//! action. Assigning an IP to the droplet that holds it changes nothing, so
//! the request is retried like a read; the action is then polled until it
//! completes and the IP read back, so "assigned" means the API confirms it.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{ApiError, Client};

/// Pause between polls of an action or of a locked reserved IP.
const POLL: Duration = Duration::from_millis(250);

/// A reserved IP as the API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReservedIp {
    /// The droplet holding it, if any.
    pub droplet: Option<Holder>,
    /// An action is under way; the API refuses another until it completes.
    #[serde(default)]
    pub locked: bool,
}

/// The droplet a reserved IP is assigned to (the API sends the whole
/// droplet; these are the parts doproxy reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Holder {
    pub id: u64,
    pub name: String,
}

#[derive(Deserialize)]
struct OneReservedIp {
    reserved_ip: ReservedIp,
}

#[derive(Deserialize)]
struct OneAction {
    action: Action,
}

#[derive(Deserialize)]
struct Action {
    id: u64,
    status: String,
}

/// The reserved IP `ip`; `ApiError::NotFound` if the account has none such.
pub async fn get(api: &Client, ip: Ipv4Addr) -> Result<ReservedIp, ApiError> {
    let answer = api.get_json(&format!("/v2/reserved_ips/{ip}"), &[]).await?;
    serde_json::from_value::<OneReservedIp>(answer)
        .map(|one| one.reserved_ip)
        .map_err(|err| ApiError::Malformed(err.to_string()))
}

/// Assigns `ip` to droplet `droplet_id` and waits, up to `patience`, until
/// the API confirms it: the action completed and the IP reads back as held
/// by that droplet. While another action on the IP is pending, waits for it
/// first.
pub async fn assign(api: &Client, ip: Ipv4Addr, droplet_id: u64, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    let actions = format!("/v2/reserved_ips/{ip}/actions");
    let body = json!({"type": "assign", "droplet_id": droplet_id});
    let action = loop {
        match api.post_idempotent(&actions, &body).await {
            Ok(answer) => break answer,
            // 422 while the IP is locked by a pending action: wait it out.
            Err(ApiError::Rejected { status: 422, .. })
                if Instant::now() < deadline && get(api, ip).await?.locked =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("cannot assign reserved IP {ip} to droplet {droplet_id}")
                });
            }
        }
    };
    let action: OneAction =
        serde_json::from_value(action).map_err(|err| ApiError::Malformed(err.to_string()))?;
    let action_path = format!("{actions}/{}", action.action.id);
    let mut status = action.action.status;
    while status == "in-progress" {
        if Instant::now() >= deadline {
            bail!(
                "assigning reserved IP {ip} to droplet {droplet_id} was still in progress after {}; it is checked again shortly",
                humantime::format_duration(patience)
            );
        }
        tokio::time::sleep(POLL).await;
        let answer = api.get_json(&action_path, &[]).await?;
        status = serde_json::from_value::<OneAction>(answer)
            .map_err(|err| ApiError::Malformed(err.to_string()))?
            .action
            .status;
    }
    if status != "completed" {
        bail!(
            "DigitalOcean reports the assign of reserved IP {ip} to droplet {droplet_id} as {status}; it is tried again shortly"
        );
    }
    let holder = get(api, ip).await?.droplet.map(|d| d.id);
    if holder != Some(droplet_id) {
        bail!(
            "reserved IP {ip} is held by {} right after its assign to droplet {droplet_id} completed; another proxy may have claimed it",
            holder.map_or("no droplet".to_string(), |id| format!("droplet {id}"))
        );
    }
    Ok(())
}
