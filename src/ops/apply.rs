//! Bringing HAProxy to the inventory (`haproxy::apply`), its frontend on
//! the bind looked up once per process, and counted in the metrics: the
//! pool by status before each update, and how HAProxy took it (a reload, a
//! runtime update, a runtime update refused, a failed reload). And what
//! HAProxy sees of the pool's servers.

use std::collections::HashMap;

use anyhow::Result;

use super::Context;
use crate::haproxy::{self, Applied, Reload, ReloadFailed, ServerStat};
use crate::metrics::{self, HaproxyUpdate};
use crate::model::Entry;

impl Context {
    /// `haproxy::apply` for `entries`, counted.
    pub async fn apply(
        &self,
        entries: &[Entry],
        reload: Reload,
        allow_empty: bool,
    ) -> Result<Applied> {
        count_pool(entries);
        self.write_certificate_file().await;
        let bind = self.frontend_bind().await;
        let applied =
            haproxy::apply(&self.config.haproxy, bind, entries, reload, allow_empty).await;
        let (refused, update) = match &applied {
            Ok(applied) if applied.runtime_updated => (false, Some(HaproxyUpdate::AtRuntime)),
            Ok(applied) if applied.reloaded => {
                (applied.runtime_refused, Some(HaproxyUpdate::Reloaded))
            }
            Ok(_) => (false, None),
            Err(err) => match err.downcast_ref::<ReloadFailed>() {
                Some(failed) => (failed.runtime_refused, Some(HaproxyUpdate::ReloadFailed)),
                None => (false, None),
            },
        };
        if refused {
            metrics::haproxy(HaproxyUpdate::RuntimeRefused);
        }
        if let Some(update) = update {
            metrics::haproxy(update);
        }
        applied
    }

    /// `doproxy reload`: `apply`, reloading even an unchanged config.
    pub async fn reload(&self, entries: &[Entry], allow_empty: bool) -> Result<Applied> {
        self.apply(entries, Reload::Always, allow_empty).await
    }

    /// HAProxy's view of each droplet's server (UP, DOWN, DRAIN, ...), by
    /// droplet ID, from its admin socket; empty without one.
    pub async fn server_states(&self) -> Result<HashMap<u64, ServerStat>> {
        haproxy::server_states(&self.config.haproxy).await
    }

    /// Renders the config for `entries` into haproxy_cfg_file (`generate`);
    /// the number of servers in it.
    pub async fn generate(&self, entries: &[Entry]) -> Result<usize> {
        self.write_certificate_file().await;
        let bind = self.frontend_bind().await;
        haproxy::generate(&self.config.haproxy, bind, entries).await
    }
}

/// The pool as the inventory `entries` has it, by status, in the metrics.
pub fn count_pool(entries: &[Entry]) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for entry in entries {
        let status = entry.status.as_str();
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += 1,
            None => counts.push((status, 1)),
        }
    }
    metrics::pool(&counts);
}
