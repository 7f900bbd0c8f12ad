//! Deleting droplets the caller names (lines, IDs, names, or what the
//! pool has beyond a size): every target is checked before anything
//! happens, the last serving droplet leaves only on purpose, deletes an
//! earlier run left unfinished are completed along the way, and each
//! leaves through `retire`.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use super::Context;
use super::retire::{Leaving, Retire, retire};
use crate::haproxy::Applied;
use crate::model::{Entry, Status};
use crate::scaling::{Selector, select};

/// What a delete asks for; `scale` builds one too.
pub struct DeleteOptions {
    pub selector: Selector,
    pub drain_timeout: Duration,
    pub lock_timeout: Duration,
    pub allow_empty: bool,
}

/// What a delete did.
#[derive(Debug)]
pub struct Deletion {
    /// Destroyed and gone from the inventory.
    pub destroyed: Vec<Entry>,
    pub applied: Applied,
    /// `<id>: <error>` of each destroy that failed.
    pub failures: Vec<String>,
}

impl Deletion {
    /// The droplets that could not be destroyed, as one error, if any.
    pub fn failure(&self) -> Option<anyhow::Error> {
        (!self.failures.is_empty()).then(|| {
            anyhow!(
                "could not destroy droplet {}; it is out of HAProxy and stays in the inventory as {}, so run doproxy delete --id again",
                self.failures.join("; droplet "),
                Status::Destroying
            )
        })
    }
}

/// Deletes what `options` select, through `retire`.
pub async fn delete(ctx: &Context, options: &DeleteOptions) -> Result<Deletion> {
    ctx.api()?;
    let lock = ctx.lock(options.lock_timeout).await?;
    let mut entries = ctx.entries(Some(&lock)).await?;
    let targets = select(&entries, &options.selector)?;
    let serving_after = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| e.is_serving() && !targets.contains(i))
        .count();
    if serving_after == 0 && entries.iter().any(Entry::is_serving) && !options.allow_empty {
        bail!(
            "this would remove the last server from HAProxy, which would then answer every request with 503; add --allow-empty to delete it on purpose"
        );
    }
    let mut leaving: Vec<Leaving> = targets
        .iter()
        .map(|&i| Leaving::listed(&entries[i]))
        .collect();
    let retry = format!(
        "doproxy delete --id {}",
        leaving
            .iter()
            .map(|l| l.entry.id.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Deletes an earlier run could not finish are completed along the way.
    let targeted: HashSet<usize> = targets.iter().copied().collect();
    for (i, entry) in entries.iter().enumerate() {
        if entry.status == Status::Destroying && !targeted.contains(&i) {
            tracing::info!(
                "completing the unfinished delete of droplet {} ({})",
                entry.id,
                entry.name
            );
            leaving.push(Leaving::listed(entry));
        }
    }
    let how = Retire {
        drain_timeout: options.drain_timeout,
        allow_empty: options.allow_empty,
        retry: &retry,
    };
    let retired = retire(ctx, &lock, &mut entries, &leaving, &how).await?;
    Ok(Deletion {
        destroyed: retired.destroyed,
        applied: retired.applied,
        failures: retired.failures,
    })
}
