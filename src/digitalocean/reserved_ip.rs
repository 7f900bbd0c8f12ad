//! Reserved IPs: which droplet holds one, and moving it with an `assign`
//! action. Assigning an IP to the droplet that holds it changes nothing, so
//! the request is sent again when refused for a pending action or lost, but
//! only after the caller says, each time, that it may still act (a leader
//! confirms its leadership), and after a pause that doubles each time; the
//! action is then polled until it completes and the IP read back, so
//! "assigned" means the API confirms it.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{ApiError, Client};
use crate::text::Printable;

/// Pause between polls of an action.
const POLL: Duration = Duration::from_millis(250);
/// The first pause before an assign is sent again; it doubles every time.
const FIRST_RETRY: Duration = Duration::from_millis(500);

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
/// droplet; these are the parts doproxy reads). `doctor` shows the name.
#[derive(Debug, Clone, Deserialize)]
pub struct Holder {
    pub id: u64,
    pub name: Printable,
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
/// by that droplet. `may_act` is asked right before every assign request and
/// its error ends the attempt, so nothing is sent once the caller may no
/// longer act. While another action on the IP is pending (422), or when the
/// API stumbles, the assign is sent again after 0.5 s, 1 s, 2 s, ...
pub async fn assign(
    api: &Client,
    ip: Ipv4Addr,
    droplet_id: u64,
    patience: Duration,
    may_act: impl AsyncFn() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    let actions = format!("/v2/reserved_ips/{ip}/actions");
    let body = json!({"type": "assign", "droplet_id": droplet_id});
    let mut pause = FIRST_RETRY;
    let action = loop {
        may_act().await?;
        let (refused, hint) = match api.post_once(&actions, &body).await {
            Ok(answer) => break answer,
            Err(ApiError::Rejected { status: 422, .. }) if get(api, ip).await?.locked => {
                ("another action on it is under way".to_string(), None)
            }
            Err(err) if err.is_transient() => (err.to_string(), err.retry_after()),
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("cannot assign reserved IP {ip} to droplet {droplet_id}")
                });
            }
        };
        let wait = hint.map_or(pause, |hint| hint.max(pause));
        if Instant::now() + wait >= deadline {
            bail!(
                "could not assign reserved IP {ip} to droplet {droplet_id} within {} ({refused}); it is tried again shortly",
                humantime::format_duration(patience)
            );
        }
        tracing::debug!(
            "assigning reserved IP {ip}: {refused}; asking again in {}",
            humantime::format_duration(wait)
        );
        api.retrying();
        tokio::time::sleep(wait).await;
        pause = pause.saturating_mul(2);
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
