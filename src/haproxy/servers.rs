//! The running servers, through the admin socket: what HAProxy sees of
//! each droplet's server (state, sessions, queue, rate), and taking
//! servers out of rotation before their droplets go (drain) or back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use super::render::droplet_id;
use super::runtime::{AdminState, Runtime, ServerStat};
use super::settings::Settings;

/// How often a drain checks whether sessions have ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// HAProxy's view of each droplet's server (UP, DOWN, DRAIN, MAINT, ...),
/// by droplet ID, from the admin socket.
pub async fn server_states(settings: &Settings) -> Result<HashMap<u64, ServerStat>> {
    let Some(runtime) = Runtime::of(settings) else {
        return Ok(HashMap::new());
    };
    Ok(runtime
        .servers()
        .await?
        .into_iter()
        .filter_map(|s| Some((droplet_id(&s.server)?, s)))
        .collect())
}

/// What HAProxy sees of the servers of droplets `ids`, for autoscaling.
#[derive(Debug, Default, PartialEq)]
pub struct PoolLoad {
    /// Current sessions, summed over the servers.
    pub sessions: u64,
    /// Sessions per second, summed over the servers.
    pub rate: u64,
    /// Requests queued at the servers and at their backends.
    pub queued: u64,
    /// The mean of the servers' average response times (ms), over those
    /// with sessions now or in the last second: one idle since keeps the
    /// time of its last requests, which says nothing of now. 0 when none
    /// has any; None when HAProxy shows no response times.
    pub response_ms: Option<f64>,
}

pub async fn pool_load(settings: &Settings, ids: &[u64]) -> Result<PoolLoad> {
    let runtime = Runtime::of(settings)
        .context("HAProxy metrics need its admin socket; set haproxy_socket")?;
    let rows = runtime.servers().await?;
    let ids: HashSet<u64> = ids.iter().copied().collect();
    let mut load = PoolLoad::default();
    let mut backends = HashSet::new();
    let (mut busy, mut busy_ms) = (0u64, 0u64);
    for row in rows.iter().filter(|r| serves_one_of(r, &ids)) {
        load.sessions += row.sessions;
        load.rate += row.rate;
        load.queued += row.queued;
        backends.insert(row.backend.as_str());
        if let Some(ms) = row.response_ms.filter(|_| row.rate > 0 || row.sessions > 0) {
            (busy, busy_ms) = (busy + 1, busy_ms + ms);
        }
    }
    let shown = rows.iter().any(|r| r.response_ms.is_some());
    load.response_ms = shown.then(|| match busy {
        0 => 0.0,
        n => busy_ms as f64 / n as f64,
    });
    load.queued += rows
        .iter()
        .filter(|r| r.server == "BACKEND" && backends.contains(r.backend.as_str()))
        .map(|r| r.queued)
        .sum::<u64>();
    Ok(load)
}

/// Takes the servers of droplets `ids` out of rotation in the running HAProxy
/// before they leave the config: `drain` (no new sessions), wait until their
/// sessions end (at most `timeout`), then `maint`. Does nothing without
/// haproxy_socket; servers HAProxy does not know are skipped. Callers that
/// stop on a signal drop this future and `undrain`.
pub async fn drain(settings: &Settings, ids: &[u64], timeout: Duration) -> Result<()> {
    let Some(runtime) = Runtime::of(settings).filter(|_| !ids.is_empty()) else {
        return Ok(());
    };
    let targets = set_state(&runtime, ids, AdminState::Drain).await?;
    let ids: HashSet<u64> = ids.iter().copied().collect();
    if !targets.is_empty() {
        tracing::info!("draining {} server(s) in HAProxy", targets.len());
    }
    let started = Instant::now();
    let mut status = crate::progress::Status::new();
    loop {
        let open: u64 = runtime
            .servers()
            .await?
            .iter()
            .filter(|s| serves_one_of(s, &ids))
            .map(|s| s.sessions)
            .sum();
        if open == 0 {
            break;
        }
        if started.elapsed() >= timeout {
            tracing::warn!(
                "{open} session(s) still open after draining for {}; removing the servers anyway",
                humantime::format_duration(timeout)
            );
            break;
        }
        status.show(&format!("draining: {open} session(s) still open"));
        tokio::time::sleep(DRAIN_POLL).await;
    }
    // The servers drained, without asking HAProxy for them again.
    runtime.set_state(&targets, AdminState::Maint).await
}

/// Puts drained servers back into rotation, after a delete that did not go
/// ahead.
pub async fn undrain(settings: &Settings, ids: &[u64]) -> Result<()> {
    let Some(runtime) = Runtime::of(settings).filter(|_| !ids.is_empty()) else {
        return Ok(());
    };
    set_state(&runtime, ids, AdminState::Ready).await?;
    Ok(())
}

/// Sets the running servers of droplets `ids` to `state`; returns their
/// (backend, server) names.
async fn set_state(
    runtime: &Runtime<'_>,
    ids: &[u64],
    state: AdminState,
) -> Result<Vec<(String, String)>> {
    let ids: HashSet<u64> = ids.iter().copied().collect();
    let targets: Vec<(String, String)> = runtime
        .servers()
        .await?
        .into_iter()
        .filter(|s| serves_one_of(s, &ids))
        .map(|s| (s.backend, s.server))
        .collect();
    runtime.set_state(&targets, state).await?;
    Ok(targets)
}

/// Whether `row` is the server of one of droplets `ids`.
fn serves_one_of(row: &ServerStat, ids: &HashSet<u64>) -> bool {
    droplet_id(&row.server).is_some_and(|id| ids.contains(&id))
}
