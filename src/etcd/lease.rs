//! Leases: granted, kept alive from a background task that knows when the
//! lease can no longer be counted on, and revoked. Whatever is attached to a
//! lease (a lock's key, the leader key) goes with it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use super::client::Client;
use super::error::EtcdError;
use super::wire::{LeaseGrantResponse, LeaseKeepAliveResponse, StreamLine};

/// Keeps a lease alive from a background task until dropped, and knows when
/// the lease can no longer be counted on.
pub struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    health: Arc<Mutex<LeaseHealth>>,
}

/// What the renewals have learnt about a lease.
#[derive(Debug, Clone, Copy)]
struct LeaseHealth {
    /// When the lease runs out unless renewed again, counted from when the
    /// last successful grant or renewal was sent, so it errs on the early side.
    expires: Instant,
    /// etcd said the lease no longer exists.
    gone: bool,
}

/// Why a lease, and whatever it holds, is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    #[error("etcd says its lease has run out")]
    Gone,
    #[error("no renewal of its lease succeeded in time")]
    NotRenewed,
}

impl Client {
    /// A new lease of `ttl`; returns its ID.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let body = json!({"TTL": ttl.as_secs().to_string()});
        let response: LeaseGrantResponse = self.call("/v3/lease/grant", &body).await?;
        Ok(response.id)
    }

    /// Renews `lease` every third of `ttl` until the returned guard drops, so
    /// a renewal that fails is tried again well before the lease runs out.
    /// `granted` is when the grant request was sent.
    pub fn keep_alive(&self, lease: i64, ttl: Duration, granted: Instant) -> KeepAlive {
        let health = Arc::new(Mutex::new(LeaseHealth {
            expires: granted + ttl,
            gone: false,
        }));
        let client = self.clone();
        let learnt = health.clone();
        let task = tokio::spawn(async move {
            let mut renewals = tokio::time::interval_at(granted + ttl / 3, ttl / 3);
            renewals.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                renewals.tick().await;
                let sent = Instant::now();
                let renewed = client.renew_lease(lease).await;
                let mut health = learnt.lock().unwrap_or_else(|e| e.into_inner());
                match renewed {
                    Ok(Some(left)) => health.expires = sent + left,
                    Ok(None) => {
                        health.gone = true;
                        tracing::warn!(
                            "etcd lease {lease:x} has run out, so the lock it held is lost and this run's writes will be refused"
                        );
                        return;
                    }
                    Err(err) => tracing::warn!("cannot renew etcd lease {lease:x}: {err}"),
                }
            }
        });
        KeepAlive { task, health }
    }

    /// One keepalive round trip: the time the lease has left, or None if
    /// it is gone.
    async fn renew_lease(&self, lease: i64) -> Result<Option<Duration>, EtcdError> {
        // The gateway answers each request object in the body with one line;
        // a body of one object gets one line, then the stream ends.
        let body = json!({"ID": lease.to_string()});
        let line: StreamLine<LeaseKeepAliveResponse> =
            self.call("/v3/lease/keepalive", &body).await?;
        match (line.result, line.error) {
            (Some(result), _) => Ok(u64::try_from(result.ttl)
                .ok()
                .filter(|&ttl| ttl > 0)
                .map(Duration::from_secs)),
            (None, error) => Err(EtcdError::refused(
                &self.endpoint(),
                error.map_or("empty keepalive answer".to_string(), |e| e.message),
            )),
        }
    }

    /// Ends `lease` at once, deleting every key attached to it.
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), EtcdError> {
        let body = json!({"ID": lease.to_string()});
        self.call::<Value>("/v3/lease/revoke", &body).await?;
        Ok(())
    }

    /// Ends `lease` early; one that cannot be revoked simply runs out.
    pub async fn revoke_quietly(&self, lease: i64) {
        if let Err(err) = self.revoke_lease(lease).await {
            tracing::debug!("cannot revoke etcd lease {lease:x}, it will expire: {err}");
        }
    }
}

impl KeepAlive {
    /// Why the lease is lost, if it is as far as this run knows: etcd said
    /// so, or no renewal succeeded within its time to live.
    pub fn lost(&self) -> Option<LeaseLost> {
        let health = *self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.lost(Instant::now())
    }

    /// How long the lease lasts at least without another renewal, as far as
    /// this run knows; zero once it is lost.
    pub fn time_left(&self) -> Duration {
        let health = *self.health.lock().unwrap_or_else(|e| e.into_inner());
        match health.lost(Instant::now()) {
            Some(_) => Duration::ZERO,
            None => health.expires.saturating_duration_since(Instant::now()),
        }
    }
}

impl LeaseHealth {
    fn lost(&self, now: Instant) -> Option<LeaseLost> {
        if self.gone {
            Some(LeaseLost::Gone)
        } else if now >= self.expires {
            Some(LeaseLost::NotRenewed)
        } else {
            None
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_lost_once_gone_or_past_its_time() {
        let now = Instant::now();
        let health = LeaseHealth {
            expires: now + Duration::from_secs(30),
            gone: false,
        };
        assert_eq!(health.lost(now), None);
        assert_eq!(
            health.lost(now + Duration::from_secs(30)),
            Some(LeaseLost::NotRenewed)
        );
        let gone = LeaseHealth {
            gone: true,
            ..health
        };
        assert_eq!(gone.lost(now), Some(LeaseLost::Gone));
    }
}
