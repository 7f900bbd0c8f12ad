//! Readiness: a droplet joins HAProxy only once its application answers the
//! health check, not merely when DigitalOcean calls it active (the original
//! told users to wait "a couple minutes" and hope).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::config::HealthCheck;

/// How long one check may take, and the pause between failed checks.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Checks every droplet `(id, private address)` in parallel until it answers
/// `GET <path>` on the check port with the expected status, or `timeout`
/// passes. Returns the IDs of the droplets that became ready.
pub async fn wait_until_ready(
    check: &HealthCheck,
    droplets: &[(u64, Ipv4Addr)],
    timeout: Duration,
) -> Result<Vec<u64>> {
    wait_until_ready_unless_gone(check, droplets, timeout, &Gone::default()).await
}

/// Droplets found destroyed while their health checks run: no reason to
/// wait on them any longer.
pub type Gone = Arc<Mutex<HashSet<u64>>>;

/// `wait_until_ready`, giving up on a droplet as soon as it is in `gone`.
pub async fn wait_until_ready_unless_gone(
    check: &HealthCheck,
    droplets: &[(u64, Ipv4Addr)],
    timeout: Duration,
    gone: &Gone,
) -> Result<Vec<u64>> {
    let client = crate::http::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .build()
        .context("cannot set up the HTTP client for readiness checks")?;
    let deadline = Instant::now() + timeout;
    let mut checks = JoinSet::new();
    for &(id, address) in droplets {
        let client = client.clone();
        let url = format!("http://{address}:{}{}", check.port, check.path);
        let expected = check.status;
        let gone = gone.clone();
        tracing::info!("waiting for droplet {id} to answer GET {url} with {expected}");
        checks.spawn(async move {
            loop {
                let answered = client.get(&url).send().await.map(|r| r.status().as_u16());
                if answered.as_ref().is_ok_and(|&status| status == expected) {
                    tracing::info!("droplet {id} is ready");
                    return (id, true);
                }
                if gone.lock().unwrap_or_else(|e| e.into_inner()).contains(&id) {
                    return (id, false);
                }
                if Instant::now() + RETRY_PAUSE >= deadline {
                    let last = match answered {
                        Ok(status) => format!("status {status}"),
                        Err(err) => format!("{err}"),
                    };
                    tracing::warn!("droplet {id} is not ready (last answer: {last})");
                    return (id, false);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        });
    }
    let mut ready = Vec::new();
    let mut status = crate::progress::Status::new();
    let mut checked = 0;
    status.show(&format!(
        "health checks: 0 of {} droplet(s) done",
        droplets.len()
    ));
    while let Some(joined) = checks.join_next().await {
        checked += 1;
        status.show(&format!(
            "health checks: {checked} of {} droplet(s) done",
            droplets.len()
        ));
        let (id, is_ready) = joined.context("a readiness check failed")?;
        if is_ready {
            ready.push(id);
        }
    }
    Ok(ready)
}
