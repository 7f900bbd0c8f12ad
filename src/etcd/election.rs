//! The election of the proxy that holds the pool's reserved IP: one key,
//! created only if absent and attached to the winner's lease, so it goes
//! when the leader resigns, dies or is cut off from etcd for a lease's time.
//! Beside it, the assignment history, written only while leadership holds.

use std::time::Duration;

use anyhow::{Result, bail};

use super::client::Client;
use super::error::EtcdError;
use super::lease::KeepAlive;
use super::wire::{Compare, Op, Put};

/// The election held through `leader_key`.
pub struct Election {
    client: Client,
    leader_key: String,
    history_key: String,
}

/// Proof of leadership: the leader key on this lease, kept alive until
/// resigned or dropped (then the key goes when the lease runs out).
pub struct Leadership {
    client: Client,
    leader_key: String,
    history_key: String,
    lease: i64,
    keep_alive: KeepAlive,
    ttl: Duration,
}

/// What etcd says about the leader key.
pub enum LeaderKey {
    Vacant,
    /// Held; the leader's own description of itself.
    Held(String),
}

impl Election {
    /// The election whose leader holds `leader_key`, recording its
    /// assignments in `history_key`.
    pub fn new(client: &Client, leader_key: String, history_key: String) -> Election {
        Election {
            client: client.clone(),
            leader_key,
            history_key,
        }
    }

    /// Who leads, as the leader described itself.
    pub async fn leader(&self) -> Result<LeaderKey> {
        Ok(match self.client.get(&self.leader_key).await? {
            None => LeaderKey::Vacant,
            Some(value) => LeaderKey::Held(String::from_utf8_lossy(&value).into_owned()),
        })
    }

    /// Claims leadership with `identity` as the key's value, on a new lease
    /// of `ttl` kept alive from now on; None when another proxy leads.
    pub async fn campaign(&self, identity: &str, ttl: Duration) -> Result<Option<Leadership>> {
        let granted = tokio::time::Instant::now();
        let lease = self.client.grant_lease(ttl).await?;
        let put = Op::Put(Put {
            key: self.leader_key.clone(),
            value: identity.as_bytes().to_vec(),
            lease: Some(lease),
        });
        let won = self
            .client
            .txn(&[Compare::KeyMissing(self.leader_key.clone())], &[put])
            .await;
        if !matches!(won, Ok(true)) {
            self.client.revoke_quietly(lease).await;
            return won.map(|_| None).map_err(Into::into);
        }
        Ok(Some(Leadership {
            client: self.client.clone(),
            leader_key: self.leader_key.clone(),
            history_key: self.history_key.clone(),
            lease,
            keep_alive: self.client.keep_alive(lease, ttl, granted),
            ttl,
        }))
    }

    /// The recorded assignments, as written by `Leadership::record`.
    pub async fn history(&self) -> Result<Option<String>> {
        let value = self.client.get(&self.history_key).await?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

impl Leadership {
    /// Fails unless leadership can be acted upon now: the lease has at least
    /// half its time to live left as far as this run knows, and etcd confirms
    /// that the leader key is still on it. A leader that cannot confirm does
    /// nothing, so a proxy cut off from etcd never acts beside a new leader.
    pub async fn confirm(&self) -> Result<(), Unconfirmed> {
        // Checked again after the read, which may have taken a while.
        let renewed = || {
            if self.keep_alive.time_left() < self.ttl / 2 {
                return Err(Unconfirmed::Lost(
                    "its lease was not renewed in time".to_string(),
                ));
            }
            Ok(())
        };
        renewed()?;
        match self.client.get_key(&self.leader_key).await {
            Ok(Some(kv)) if kv.lease == self.lease => renewed(),
            Ok(_) => Err(Unconfirmed::Lost(
                "its lease ran out or was revoked".to_string(),
            )),
            Err(err) => Err(Unconfirmed::Unreachable(err)),
        }
    }

    /// Replaces the assignment history with `history`, only while this
    /// leadership holds.
    pub async fn record(&self, history: &str) -> Result<()> {
        let put = Op::Put(Put {
            key: self.history_key.clone(),
            value: history.as_bytes().to_vec(),
            lease: None,
        });
        let held = [Compare::LeaseIs(self.leader_key.clone(), self.lease)];
        if !self.client.txn(&held, &[put]).await? {
            bail!("lost leadership before the assignment could be recorded");
        }
        Ok(())
    }

    /// Gives leadership up at once: revoking the lease deletes the leader
    /// key, so another proxy can take over without waiting for it to expire.
    pub async fn resign(self) {
        if let Err(err) = self.client.revoke_lease(self.lease).await {
            tracing::warn!(
                "cannot revoke the leader's etcd lease ({err}); another proxy takes over once it runs out, within {}",
                humantime::format_duration(self.ttl)
            );
        }
    }
}

/// Why a leader may not act now.
#[derive(Debug, thiserror::Error)]
pub enum Unconfirmed {
    /// Leadership is gone for good.
    #[error("lost leadership ({0})")]
    Lost(String),
    /// etcd did not answer: leadership may or may not hold.
    #[error("cannot confirm leadership with etcd ({0})")]
    Unreachable(EtcdError),
}
