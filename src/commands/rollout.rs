//! `rollout`: replace the pool's droplets with new ones built from the
//! options as they are now, step by step, never letting serving capacity
//! drop below the floor (`--min-healthy`).
//!
//! A step claims replacements with `create` (each new droplet recorded as
//! replacing an old one, in the write that records it), lets the old ones
//! the floor allows go first, then `settle`s: the new droplets join HAProxy
//! once they pass the health check, and only then do the old ones leave
//! through `retire` (drain, reload, destroy). The plan lives in the store,
//! and the pairs in the inventory, so a rollout stopped at any point (a
//! signal between steps, kill -9 anywhere) resumes on the next run: a
//! droplet already being replaced is never replaced again, and every
//! droplet made is recorded. New droplets that fail the health check are
//! destroyed; once `--max-unready` have, the rollout stops and the old
//! droplets they were to replace keep serving.
//!
//! The inventory lock is taken only for each change, as `create` does;
//! a lock file beside the inventory keeps to one rollout at a time on
//! this proxy.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::create::{self, CreateOptions, Resume};
use super::delete::{self, Leaving, Retire, Retired};
use super::{App, Report};
use crate::cli::{RolloutArgs, ScaleWaits};
use crate::digitalocean::{Droplet, Networks};
use crate::model::{Build, Entry, Status};
use crate::scaling::rollout::{Next, Rollout, StepSize, next_step, remaining, start, why_replaced};

/// Where the rollout under way lives in the store.
const STATE: &str = "rollout";
/// What to run to continue a stopped rollout.
const RESUME: &str = "doproxy rollout";

/// What survives between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The rollout under way; None once it finished.
    under_way: Option<Rollout>,
}

/// One droplet, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub id: u64,
    pub name: String,
}

impl Named {
    fn of(entry: &Entry) -> Named {
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
    fn extend(&mut self, later: Settled) {
        self.replaced.extend(later.replaced);
        self.unready.extend(later.unready);
        self.unready_failures.extend(later.unready_failures);
        self.failures.extend(later.failures);
    }
}

pub async fn run(app: &App, args: &RolloutArgs) -> Result<Report> {
    let (current, _) = create::current_build(&app.config)?;
    if args.dry_run {
        return dry_run(app, args, &current).await;
    }
    let _rolling = app
        .one_at_a_time("rollout", args.waits.lock.lock_timeout)
        .await?;
    let (rollout, resumed) = begin(app, args, &current).await?;
    if rollout.olds.is_empty() {
        let text = if args.only_stale {
            "Nothing to roll out: every droplet matches droplet_options."
        } else {
            "Nothing to roll out: the pool has no droplet to replace."
        };
        return Report::new(
            vec![text.to_string()],
            json!({ "replaced": [], "unready": [], "floor": rollout.floor, "resumed": false }),
        );
    }
    let started = Instant::now();
    let total = rollout.olds.len();
    let mut so_far = Settled::default();
    loop {
        let settled = settle(app, &args.waits, RESUME).await?;
        for pair in &settled.replaced {
            tracing::info!("rollout: {} replaced by {}", pair.old, pair.new);
        }
        for failure in &settled.unready_failures {
            tracing::warn!("rollout: {failure}");
        }
        so_far.extend(settled);
        let entries = app.entries(None).await?;
        // Droplets of the plan no longer in the pool: replaced, by this run
        // or one before it.
        let done = rollout
            .olds
            .iter()
            .filter(|id| !entries.iter().any(|e| e.id == **id))
            .count();
        let progress = format!("{done} of {total} droplet(s) replaced");
        if let Some(stop) = stop_reason(app, &so_far, args.max_unready, &progress) {
            let report = summary(&so_far, &rollout, started, resumed, false)?;
            return Ok(report.failed(stop));
        }
        let (replace, early) = match next_step(&rollout, &entries, &current) {
            Next::Done => break,
            Next::Blocked(reason) => {
                let report = summary(&so_far, &rollout, started, resumed, false)?;
                return Ok(report.failed(anyhow!("the rollout cannot go on: {reason}")));
            }
            Next::Step { replace, early } => (replace, early),
        };
        let names: Vec<String> = replace
            .iter()
            .filter_map(|id| entries.iter().find(|e| e.id == *id))
            .map(|e| Named::of(e).to_string())
            .collect();
        tracing::info!(
            "rollout: replacing {} ({done} of {total} replaced so far)",
            crate::listing::abbreviated(&names)
        );
        step(app, &args.waits, replace, &early).await?;
    }
    finish(app, &args.waits).await?;
    summary(&so_far, &rollout, started, resumed, true)
}

/// Why the rollout stops after this step, if it does: too many new
/// droplets failed to join, a replacement went wrong, or a signal came.
/// `progress` says how far it got.
fn stop_reason(
    app: &App,
    so_far: &Settled,
    max_unready: u32,
    progress: &str,
) -> Option<anyhow::Error> {
    if so_far.unready.len() >= max_unready as usize {
        return Some(anyhow!(
            "{}; the rollout stopped with {progress}, and the old droplets those were to replace keep serving: run {RESUME} again once new droplets can pass the health check",
            so_far.unready_failures.join("; ")
        ));
    }
    if !so_far.failures.is_empty() {
        return Some(anyhow!(
            "{}; the rollout stopped with {progress}: run {RESUME} again to continue",
            so_far.failures.join("; ")
        ));
    }
    let stopped = app.shutdown.check().err()?;
    Some(anyhow!(
        "stopped by {} between two steps of the rollout, with {progress}; the droplets not replaced yet serve as before: run {RESUME} again to continue",
        stopped.signal
    ))
}

/// The rollout to carry out: the one under way (resumed), or a new one,
/// written to the store before anything is replaced.
async fn begin(app: &App, args: &RolloutArgs, current: &Build) -> Result<(Rollout, bool)> {
    let lock = app.lock(args.waits.lock.lock_timeout).await?;
    let entries = app.entries(Some(&lock)).await?;
    let mut state = app.load_meta::<State>(STATE).await?;
    if let Some(rollout) = state.under_way {
        lock.release().await;
        tracing::info!(
            "resuming the rollout started at {} ({} droplet(s), at least {} serving); this run's flags apply to the next rollout",
            rollout.started_at,
            rollout.olds.len(),
            rollout.floor
        );
        return Ok((rollout, true));
    }
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let rollout = new_rollout(&entries, args, current, now)?;
    if !rollout.olds.is_empty() {
        state.under_way = Some(rollout.clone());
        app.save_meta(STATE, &state, &lock).await?;
    }
    lock.release().await;
    Ok((rollout, false))
}

/// The rollout `args` ask for on the pool `entries`; an error when the
/// flags cannot work.
fn new_rollout(
    entries: &[Entry],
    args: &RolloutArgs,
    current: &Build,
    started_at: String,
) -> Result<Rollout> {
    let step = match (args.batch, args.max_surge) {
        (_, Some(surge)) => StepSize::MaxSurge(surge as usize),
        (batch, None) => StepSize::Batch(batch.unwrap_or(1) as usize),
    };
    start(
        entries,
        current,
        args.only_stale,
        step,
        args.min_healthy,
        started_at,
    )
    .map_err(|reason| anyhow!("{reason}"))
}

/// One step: claims a replacement for each of `replace` (recorded at once),
/// then retires the ones of `early` that got one, before their
/// replacements serve. The next `settle` does the rest.
async fn step(app: &App, waits: &ScaleWaits, replace: Vec<u64>, early: &[u64]) -> Result<()> {
    let made = create::create_replacements(app, replace, waits, RESUME).await?;
    for failure in &made.failures {
        tracing::warn!("{failure}");
    }
    if early.is_empty() {
        return Ok(());
    }
    let lock = app.lock(waits.lock.lock_timeout).await?;
    let mut entries = app.entries(Some(&lock)).await?;
    let leaving: Vec<Leaving> = entries
        .iter()
        .filter(|e| early.contains(&e.id) && entries.iter().any(|n| n.replaces == Some(e.id)))
        .map(Leaving::listed)
        .collect();
    let how = Retire {
        drain_timeout: waits.drain_timeout,
        allow_empty: false,
        retry: RESUME,
    };
    let retired = delete::retire(app, &lock, &mut entries, &leaving, &how).await?;
    lock.release().await;
    if let Some(warning) = undestroyed(&retired) {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// Finishes every replacement under way (entries with `replaces`): new
/// droplets still booting join HAProxy once they pass the health check
/// (those that never do are destroyed), then each droplet whose replacement
/// serves is retired, and links to droplets already gone are dropped.
/// `command` continues it after a stop. Takes no lock when nothing is
/// under way.
pub async fn settle(app: &App, waits: &ScaleWaits, command: &'static str) -> Result<Settled> {
    let mut settled = Settled::default();
    let entries = app.entries(None).await?;
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
        let joined = create::join(app, &booting, &options, Resume::Run(command)).await?;
        settled.unready = booting
            .iter()
            .map(|d| d.id)
            .filter(|id| !joined.ready.contains(id))
            .collect();
        settled.unready_failures = joined.failures;
    }

    let lock = app.lock(waits.lock.lock_timeout).await?;
    let mut entries = app.entries(Some(&lock)).await?;
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
        let retired = delete::retire(app, &lock, &mut entries, &leaving, &how).await?;
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
        app.store.save(&entries, &lock).await?;
    }
    lock.release().await;
    Ok(settled)
}

/// The sentence about the droplets `retired` left undestroyed, if any.
fn undestroyed(retired: &Retired) -> Option<String> {
    (!retired.failures.is_empty()).then(|| {
        format!(
            "could not destroy droplet {}; it is out of HAProxy and stays in the inventory as destroying",
            retired.failures.join("; droplet ")
        )
    })
}

/// What `create::join` needs of a droplet the inventory knows.
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

/// Forgets the finished rollout.
async fn finish(app: &App, waits: &ScaleWaits) -> Result<()> {
    let lock = app.lock(waits.lock.lock_timeout).await?;
    app.save_meta(STATE, &State::default(), &lock).await?;
    lock.release().await;
    Ok(())
}

/// The final report: one line per replacement and a summary.
fn summary(
    settled: &Settled,
    rollout: &Rollout,
    started: Instant,
    resumed: bool,
    done: bool,
) -> Result<Report> {
    let seconds = started.elapsed().as_secs_f64();
    let replaced = &settled.replaced;
    let mut text: Vec<String> = replaced
        .iter()
        .map(|r| format!("Replaced {} with {}.", r.old, r.new))
        .collect();
    if done {
        text.push(format!(
            "Rollout done: {} droplet(s) replaced in {}, keeping at least {} serving.",
            replaced.len(),
            humantime::format_duration(std::time::Duration::from_secs(seconds.round() as u64)),
            rollout.floor
        ));
    }
    Report::new(
        text,
        json!({
            "replaced": replaced,
            "unready": settled.unready,
            "floor": rollout.floor,
            "seconds": (seconds * 10.0).round() / 10.0,
            "resumed": resumed,
            "done": done,
        }),
    )
}

/// What a rollout would replace now, and how, without changing anything.
async fn dry_run(app: &App, args: &RolloutArgs, current: &Build) -> Result<Report> {
    let entries = app.entries(None).await?;
    let (rollout, resuming) = match app.load_meta::<State>(STATE).await?.under_way {
        Some(rollout) => (rollout, true),
        None => (new_rollout(&entries, args, current, "-".into())?, false),
    };
    let todo = remaining(&rollout, &entries, current);
    let per_step = match rollout.step {
        StepSize::Batch(n) => format!("{n} at a time"),
        StepSize::MaxSurge(n) => format!("at most {n} beyond the pool's size"),
    };
    let mut text = vec![if resuming {
        format!(
            "A rollout started at {} is under way: {} droplet(s) left, {per_step}, keeping at least {} serving; doproxy rollout continues it.",
            rollout.started_at,
            todo.len(),
            rollout.floor
        )
    } else {
        format!(
            "Would replace {} droplet(s), {per_step}, keeping at least {} serving (--min-healthy {}%).",
            todo.len(),
            rollout.floor,
            rollout.min_healthy
        )
    }];
    let mut planned = Vec::new();
    for entry in todo
        .iter()
        .filter_map(|id| entries.iter().find(|e| e.id == *id))
    {
        let why = why_replaced(entry, current, rollout.only_stale);
        text.push(format!("  {} {}: {why}", entry.id, entry.name));
        planned.push(json!({ "id": entry.id, "name": entry.name, "why": why }));
    }
    let under_way: Vec<_> = entries
        .iter()
        .filter_map(|new| Some(json!({ "old": new.replaces?, "new": new.id })))
        .collect();
    Report::new(
        text,
        json!({
            "dry_run": true,
            "resuming": resuming,
            "floor": rollout.floor,
            "step": rollout.step,
            "replace": planned,
            "under_way": under_way,
        }),
    )
}
