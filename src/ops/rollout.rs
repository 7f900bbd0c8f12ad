//! Rolling out: replace the pool's droplets with new ones built from the
//! options as they are now, step by step, never letting serving capacity
//! drop below the floor (`--min-healthy`).
//!
//! A step claims replacements (`replace::create_replacements`, each new droplet recorded as
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

use std::time::{Instant, SystemTime};

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use super::create::current_build;
use super::replace::{Named, Settled, create_replacements, settle, undestroyed};
use super::retire::{Leaving, Retire, retire};
use super::{Context, Waits};
use crate::model::{Build, Entry, Kind};
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

/// What a rollout is asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub step: StepSize,
    /// Serving droplets kept at all times, in percent of those serving
    /// when it starts.
    pub min_healthy: u8,
    /// Replace only droplets whose build differs from the options now (or
    /// is unknown).
    pub only_stale: bool,
    /// Stop once this many new droplets failed to join.
    pub max_unready: u32,
    pub waits: Waits,
}

/// How a rollout went.
#[derive(Debug)]
pub struct RolledOut {
    /// The pool had no droplet to replace: nothing was done.
    pub nothing_to_do: bool,
    /// What settling the replacements did, over every step.
    pub settled: Settled,
    /// Serving droplets kept at all times.
    pub floor: usize,
    pub seconds: f64,
    /// It continued a rollout an earlier run started.
    pub resumed: bool,
    /// Every droplet of the plan is replaced.
    pub done: bool,
    /// Why it stopped before it was done, if it did.
    pub stop: Option<anyhow::Error>,
}

/// Replaces the pool's droplets step by step, as `request` asks, or
/// continues the rollout under way; returns once it is done, or stopped.
pub async fn roll_out(ctx: &Context, request: &Request) -> Result<RolledOut> {
    let (current, _) = current_build(&ctx.config)?;
    let _rolling = ctx
        .one_at_a_time("rollout", request.waits.lock_timeout)
        .await?;
    let (rollout, resumed) = begin(ctx, request, &current).await?;
    let started = Instant::now();
    let mut outcome = RolledOut {
        nothing_to_do: rollout.olds.is_empty(),
        settled: Settled::default(),
        floor: rollout.floor,
        seconds: 0.0,
        resumed,
        done: false,
        stop: None,
    };
    if outcome.nothing_to_do {
        outcome.resumed = false;
        return Ok(outcome);
    }
    let total = rollout.olds.len();
    loop {
        let settled = settle(ctx, &request.waits, RESUME, Kind::RolloutStep).await?;
        for pair in &settled.replaced {
            tracing::info!("rollout: {} replaced by {}", pair.old, pair.new);
        }
        for failure in &settled.unready_failures {
            tracing::warn!("rollout: {failure}");
        }
        outcome.settled.extend(settled);
        let entries = ctx.entries(None).await?;
        // Droplets of the plan no longer in the pool: replaced, by this run
        // or one before it.
        let done = rollout
            .olds
            .iter()
            .filter(|id| !entries.iter().any(|e| e.id == **id))
            .count();
        let progress = format!("{done} of {total} droplet(s) replaced");
        outcome.stop = stop_reason(ctx, &outcome.settled, request.max_unready, &progress);
        if outcome.stop.is_some() {
            outcome.seconds = started.elapsed().as_secs_f64();
            return Ok(outcome);
        }
        let (replace, early) = match next_step(&rollout, &entries, &current) {
            Next::Done => break,
            Next::Blocked(reason) => {
                outcome.seconds = started.elapsed().as_secs_f64();
                outcome.stop = Some(anyhow!("the rollout cannot go on: {reason}"));
                return Ok(outcome);
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
        step(ctx, &request.waits, replace, &early).await?;
    }
    finish(ctx, &request.waits).await?;
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome.done = true;
    Ok(outcome)
}

/// Why the rollout stops after this step, if it does: too many new
/// droplets failed to join, a replacement went wrong, or a signal came.
/// `progress` says how far it got.
fn stop_reason(
    ctx: &Context,
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
    let stopped = ctx.shutdown.check().err()?;
    Some(anyhow!(
        "stopped by {} between two steps of the rollout, with {progress}; the droplets not replaced yet serve as before: run {RESUME} again to continue",
        stopped.signal
    ))
}

/// The rollout to carry out: the one under way (resumed), or a new one,
/// written to the store before anything is replaced.
async fn begin(ctx: &Context, request: &Request, current: &Build) -> Result<(Rollout, bool)> {
    let lock = ctx.lock(request.waits.lock_timeout).await?;
    let entries = ctx.entries(Some(&lock)).await?;
    let mut state = ctx.load_meta::<State>(STATE).await?;
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
    let rollout = new_rollout(&entries, request, current, now)?;
    if !rollout.olds.is_empty() {
        state.under_way = Some(rollout.clone());
        ctx.save_meta(STATE, &state, &lock).await?;
    }
    lock.release().await;
    Ok((rollout, false))
}
/// The rollout `request` asks for on the pool `entries`; an error when
/// it cannot work.
fn new_rollout(
    entries: &[Entry],
    request: &Request,
    current: &Build,
    started_at: String,
) -> Result<Rollout> {
    start(
        entries,
        current,
        request.only_stale,
        request.step,
        request.min_healthy,
        started_at,
    )
    .map_err(|reason| anyhow!("{reason}"))
}
/// One step: claims a replacement for each of `replace` (recorded at once),
/// then retires the ones of `early` that got one, before their
/// replacements serve. The next `settle` does the rest.
async fn step(ctx: &Context, waits: &Waits, replace: Vec<u64>, early: &[u64]) -> Result<()> {
    let made = create_replacements(ctx, replace, waits, RESUME).await?;
    for failure in &made.failures {
        tracing::warn!("{failure}");
    }
    if early.is_empty() {
        return Ok(());
    }
    let lock = ctx.lock(waits.lock_timeout).await?;
    let mut entries = ctx.entries(Some(&lock)).await?;
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
    let retired = retire(ctx, &lock, &mut entries, &leaving, &how).await?;
    lock.release().await;
    if let Some(warning) = undestroyed(&retired) {
        tracing::warn!("{warning}");
    }
    Ok(())
}
/// Forgets the finished rollout.
async fn finish(ctx: &Context, waits: &Waits) -> Result<()> {
    let lock = ctx.lock(waits.lock_timeout).await?;
    ctx.save_meta(STATE, &State::default(), &lock).await?;
    lock.release().await;
    Ok(())
}

/// What a rollout would replace now, and how.
#[derive(Debug)]
pub struct Preview {
    pub rollout: Rollout,
    /// It is the rollout under way, which the next run continues.
    pub resuming: bool,
    /// The droplets left to replace.
    pub todo: Vec<u64>,
    /// Those of them in the inventory, with why each is replaced.
    pub replace: Vec<(Entry, String)>,
    /// Replacements under way: (old, new).
    pub under_way: Vec<(u64, u64)>,
}

/// What a rollout would replace now, and how, without changing anything.
pub async fn preview(ctx: &Context, request: &Request) -> Result<Preview> {
    let (current, _) = current_build(&ctx.config)?;
    let entries = ctx.entries(None).await?;
    let (rollout, resuming) = match ctx.load_meta::<State>(STATE).await?.under_way {
        Some(rollout) => (rollout, true),
        None => (new_rollout(&entries, request, &current, "-".into())?, false),
    };
    let todo = remaining(&rollout, &entries, &current);
    let replace = todo
        .iter()
        .filter_map(|id| entries.iter().find(|e| e.id == *id))
        .map(|entry| {
            let why = why_replaced(entry, &current, rollout.only_stale);
            (entry.clone(), why)
        })
        .collect();
    let under_way = entries
        .iter()
        .filter_map(|new| Some((new.replaces?, new.id)))
        .collect();
    Ok(Preview {
        rollout,
        resuming,
        todo,
        replace,
        under_way,
    })
}
