//! Replacing droplets (rollout, heal): the new droplet first, each
//! recorded as replacing an old one in the write that records it
//! (`create_replacements`); then `settle`: the new droplets join HAProxy
//! once they pass the health check, and only then do the old ones leave
//! through `retire`. The pairs live in the inventory, so a replacement
//! stopped at any point resumes: a droplet already being replaced is never
//! replaced again.

use std::collections::HashSet;

use anyhow::Result;
use serde::Serialize;

use super::create::{CreateOptions, Made, create_and_record};
use super::join::{Resume, Stage, join, stopped_create};
use super::retire::{Leaving, Retire, Retired, retire};
use super::{Context, Waits};
use crate::digitalocean::{Droplet, Networks};
use crate::model::{Change, Entry, Kind, Status};

/// One droplet, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub id: u64,
    pub name: String,
}

impl Named {
    pub(super) fn of(entry: &Entry) -> Named {
        Named {
            id: entry.id,
            name: entry.name.to_string(),
        }
    }
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.id, self.name)
    }
}

/// A finished replacement: the old droplet is destroyed, the new one serves.
#[derive(Debug, Clone, Serialize)]
pub struct Replaced {
    pub old: Named,
    pub new: Named,
}

/// What settling the replacements under way did.
#[derive(Debug, Default)]
pub struct Settled {
    pub replaced: Vec<Replaced>,
    /// New droplets that did not join: they never became active or passed
    /// the health check (and were destroyed), or someone destroyed them.
    pub unready: Vec<u64>,
    /// Why, one sentence each.
    pub unready_failures: Vec<String>,
    /// One sentence each about what else went wrong.
    pub failures: Vec<String>,
}

impl Settled {
    /// Adds what a later settle did.
    pub(super) fn extend(&mut self, later: Settled) {
        self.replaced.extend(later.replaced);
        self.unready.extend(later.unready);
        self.unready_failures.extend(later.unready_failures);
        self.failures.extend(later.failures);
    }
}

/// Replacements for droplets `doomed` (rollout, heal), created and recorded
/// like any create; when a signal came meanwhile, the error says to run
/// `resume` to go on from there.
pub async fn create_replacements(
    ctx: &Context,
    doomed: Vec<u64>,
    waits: &Waits,
    resume: &'static str,
) -> Result<Made> {
    let made = create_and_record(ctx, &CreateOptions::replacing(doomed, waits)).await?;
    if let Err(stopped) = ctx.shutdown.check() {
        let created: Vec<u64> = made.droplets.iter().map(|d| d.id).collect();
        return Err(stopped_create(
            stopped.signal,
            Stage::Created,
            &created,
            Resume::Run(resume),
        ));
    }
    Ok(made)
}

/// Finishes every replacement under way (entries with `replaces`): new
/// droplets still booting join HAProxy once they pass the health check
/// (those that never do are destroyed), then each droplet whose replacement
/// serves is retired, and links to droplets already gone are dropped.
/// `command` continues it after a stop. Takes no lock when nothing is
/// under way. Each finished replacement is recorded as an event of `kind`
/// (a rollout step, a heal).
pub async fn settle(
    ctx: &Context,
    waits: &Waits,
    command: &'static str,
    kind: Kind,
) -> Result<Settled> {
    let mut settled = Settled::default();
    let entries = ctx.entries(None).await?;
    if !entries.iter().any(|e| e.replaces.is_some()) {
        return Ok(settled);
    }
    let booting: Vec<Droplet> = entries
        .iter()
        .filter(|e| e.replaces.is_some() && matches!(e.status, Status::New | Status::Unready))
        .map(as_droplet)
        .collect();
    if !booting.is_empty() {
        let options = CreateOptions::replacing(Vec::new(), waits);
        let joined = join(ctx, &booting, &options, Resume::Run(command)).await?;
        settled.unready = booting
            .iter()
            .map(|d| d.id)
            .filter(|id| !joined.ready.contains(id))
            .collect();
        settled.unready_failures = joined.failures;
    }

    let lock = ctx.lock(waits.lock_timeout).await?;
    let mut entries = ctx.entries(Some(&lock)).await?;
    let pairs: Vec<(Entry, Entry)> = entries
        .iter()
        .filter(|new| new.is_serving())
        .filter_map(|new| {
            let old = entries.iter().find(|e| Some(e.id) == new.replaces)?;
            Some((old.clone(), new.clone()))
        })
        .collect();
    if !pairs.is_empty() {
        let leaving: Vec<Leaving> = pairs.iter().map(|(old, _)| Leaving::listed(old)).collect();
        let how = Retire {
            drain_timeout: waits.drain_timeout,
            allow_empty: false,
            retry: command,
        };
        let retired = retire(ctx, &lock, &mut entries, &leaving, &how).await?;
        for (old, new) in &pairs {
            if retired.destroyed.iter().any(|e| e.id == old.id) {
                settled.replaced.push(Replaced {
                    old: Named::of(old),
                    new: Named::of(new),
                });
            }
        }
        settled.failures.extend(undestroyed(&retired));
    }
    // A link is done once its droplet is gone; one whose replacement
    // neither boots nor serves (someone deletes it, it is off) is dropped,
    // so the droplet can be replaced again.
    let present: HashSet<u64> = entries.iter().map(|e| e.id).collect();
    let mut unlinked = false;
    for entry in entries.iter_mut().filter(|e| e.replaces.is_some()) {
        let old = entry.replaces.expect("filtered");
        let alive = matches!(entry.status, Status::New | Status::Unready | Status::Active);
        if !present.contains(&old) || !alive {
            entry.replaces = None;
            unlinked = true;
        }
    }
    if unlinked {
        ctx.store.save(&entries, &lock).await?;
    }
    lock.release().await;
    let changes = settled.replaced.iter().map(|pair| {
        Change::done(
            kind,
            vec![pair.old.id, pair.new.id],
            format!("{} replaced by {}", pair.old, pair.new),
        )
    });
    ctx.record(changes).await;
    Ok(settled)
}

/// The sentence about the droplets `retired` left undestroyed, if any.
pub(super) fn undestroyed(retired: &Retired) -> Option<String> {
    (!retired.failures.is_empty()).then(|| {
        format!(
            "could not destroy droplet {}; it is out of HAProxy and stays in the inventory as destroying",
            retired.failures.join("; droplet ")
        )
    })
}

/// What `join` needs of a droplet the inventory knows.
fn as_droplet(entry: &Entry) -> Droplet {
    Droplet {
        id: entry.id,
        name: entry.name.to_string(),
        status: entry.status.to_string(),
        created_at: entry.created_at.as_deref().unwrap_or_default().to_string(),
        networks: Networks::default(),
        tags: Vec::new(),
    }
}
