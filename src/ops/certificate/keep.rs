//! What the long-running services (`watch`, `failover`, `autoscale`,
//! `heal`) keep doing alongside their own work with a
//! `tls` section: install the certificate another proxy renewed, mirror the
//! challenge answers of an issuance under way into this HAProxy, renew when
//! due; and the challenge answers an issuance publishes.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::SystemTime;

use anyhow::Result;

use super::{
    CHALLENGES, FAILURES, FailureState, MIRROR_WAIT, RENEWAL_CHECK, RENEWAL_LOCK_WAIT,
    SYNC_INTERVAL,
};
use crate::acme::ChallengeAnswers;
use crate::certificate::CertifiedKey;
use crate::certificate::renewal::{self, Renewal};
use crate::config::{CertificateSource, TlsSettings};
use crate::haproxy::Runtime;
use crate::inventory::{Store, StoreLock};
use crate::lockfile::LockBusy;
use crate::ops::Context;

impl Context {
    /// Runs `work` (a long-running service: watch, failover, autoscale,
    /// heal) with the HTTPS certificate kept alongside until it ends.
    pub async fn keeping_certificate<T>(&self, work: impl Future<Output = T>) -> T {
        tokio::select! {
            done = work => done,
            never = self.keep_certificate() => match never {},
        }
    }

    /// For the long-running services, until they stop: every second, makes
    /// HAProxy serve the certificate in the store (another proxy may have
    /// renewed it); every minute, renews it when due (one proxy at a time,
    /// backing off after failures). Never returns; with no tls section it
    /// does nothing.
    async fn keep_certificate(&self) -> std::convert::Infallible {
        let Some(tls) = &self.config.tls else {
            return std::future::pending().await;
        };
        // Two loops side by side, so that a renewal (or a wait for the
        // lock) never holds up installing or mirroring another's.
        let installing = async {
            let mut warned = Warned::default();
            let mut mirrored = BTreeMap::new();
            loop {
                let mut outcome = self.sync_certificate().await.map(|_| ());
                if let (Some(runtime), Some(files), Store::Etcd(_)) =
                    (self.runtime(), &self.config.haproxy.tls, &self.store)
                    && outcome.is_ok()
                {
                    outcome =
                        mirror_challenges(self, &runtime, &files.challenge_map, &mut mirrored)
                            .await;
                }
                warned.report(outcome);
                tokio::time::sleep(SYNC_INTERVAL).await;
            }
        };
        let renewing = async {
            let mut warned = Warned::default();
            loop {
                warned.report(self.renew_if_due(tls).await);
                tokio::time::sleep(RENEWAL_CHECK).await;
            }
        };
        tokio::select! {
            never = installing => never,
            never = renewing => never,
        }
    }

    async fn renew_if_due(&self, tls: &TlsSettings) -> Result<()> {
        if !matches!(tls.source, CertificateSource::Acme(_)) {
            return Ok(());
        }
        let current = self.stored_certificate().await?;
        let failures: FailureState = self.load_meta(FAILURES).await?;
        let facts = current.as_ref().map(CertifiedKey::facts);
        if let Renewal::At(_) =
            renewal::decide(facts, &tls.domains, &failures.failures(), SystemTime::now())
        {
            return Ok(());
        }
        let renewed = match self
            .renew_certificate(false, false, RENEWAL_LOCK_WAIT)
            .await
        {
            // Another proxy holds the store's lock, renewing or scaling:
            // its certificate lands in the store, or the next check tries again.
            Err(err) if err.downcast_ref::<LockBusy>().is_some() => {
                tracing::debug!("{err:#}; renewal left to the next check");
                return Ok(());
            }
            renewed => renewed?,
        };
        if renewed.action == "issued" {
            tracing::info!("HTTPS certificate renewed ({})", renewed.reason);
        }
        Ok(())
    }
}

/// Challenge answers in this HAProxy's map, through its admin socket, and
/// with an etcd inventory also in the store, for the other proxies.
pub(super) struct MapAnswers<'a> {
    pub(super) ctx: &'a Context,
    pub(super) lock: &'a StoreLock,
    pub(super) runtime: Runtime<'a>,
    pub(super) map: &'a Path,
}

impl MapAnswers<'_> {
    async fn share(&self, change: impl FnOnce(&mut BTreeMap<String, String>)) -> Result<()> {
        if !matches!(self.ctx.store, Store::Etcd(_)) {
            return Ok(());
        }
        let mut answers: BTreeMap<String, String> = self.ctx.load_meta(CHALLENGES).await?;
        change(&mut answers);
        self.ctx.save_meta(CHALLENGES, &answers, self.lock).await
    }
}

impl ChallengeAnswers for MapAnswers<'_> {
    async fn publish(&self, token: &str, key_authorization: &str) -> Result<()> {
        self.runtime
            .add_map_entry(self.map, token, key_authorization)
            .await?;
        if matches!(self.ctx.store, Store::Etcd(_)) {
            self.share(|answers| {
                answers.insert(token.to_string(), key_authorization.to_string());
            })
            .await?;
            tokio::time::sleep(MIRROR_WAIT).await;
        }
        Ok(())
    }

    async fn withdraw(&self, token: &str) -> Result<()> {
        self.runtime.remove_map_entry(self.map, token).await?;
        self.share(|answers| {
            answers.remove(token);
        })
        .await
    }
}

/// Warns of a failure of a loop of `keep_certificate` once, not every round.
#[derive(Default)]
struct Warned(String);

impl Warned {
    fn report(&mut self, outcome: Result<()>) {
        match outcome {
            Ok(()) => self.0.clear(),
            Err(err) => {
                let err = format!("{err:#}");
                if err != self.0 {
                    tracing::warn!("HTTPS certificate: {err}");
                    self.0 = err;
                }
            }
        }
    }
}

/// Mirrors the answers in the store into this HAProxy's map: adds the new,
/// removes those `mirrored` before that are gone.
async fn mirror_challenges(
    ctx: &Context,
    runtime: &Runtime<'_>,
    map: &Path,
    mirrored: &mut BTreeMap<String, String>,
) -> Result<()> {
    let answers: BTreeMap<String, String> = ctx.load_meta(CHALLENGES).await?;
    for (token, key_authorization) in &answers {
        if mirrored.get(token) != Some(key_authorization) {
            runtime.remove_map_entry(map, token).await?;
            runtime.add_map_entry(map, token, key_authorization).await?;
            mirrored.insert(token.clone(), key_authorization.clone());
        }
    }
    let gone: Vec<String> = mirrored
        .keys()
        .filter(|token| !answers.contains_key(*token))
        .cloned()
        .collect();
    for token in gone {
        runtime.remove_map_entry(map, &token).await?;
        mirrored.remove(&token);
    }
    Ok(())
}
