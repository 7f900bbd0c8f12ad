//! Bringing HAProxy to the inventory (`haproxy::apply`), counted in the
//! metrics: the pool by status before each update, and how HAProxy took
//! it (a reload, a runtime update, a runtime update refused, a failed
//! reload).

use anyhow::Result;

use crate::config::Config;
use crate::haproxy::{self, Applied, Reload, ReloadFailed};
use crate::metrics::{self, HaproxyUpdate};
use crate::model::Entry;

/// `haproxy::apply`, counted; the frontend listens on `frontend_bind`.
pub async fn apply(
    config: &Config,
    frontend_bind: &str,
    entries: &[Entry],
    reload: Reload,
    allow_empty: bool,
) -> Result<Applied> {
    count_pool(entries);
    let applied =
        haproxy::apply(&config.haproxy, frontend_bind, entries, reload, allow_empty).await;
    let (refused, update) = match &applied {
        Ok(applied) if applied.runtime_updated => (false, Some(HaproxyUpdate::AtRuntime)),
        Ok(applied) if applied.reloaded => (applied.runtime_refused, Some(HaproxyUpdate::Reloaded)),
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
