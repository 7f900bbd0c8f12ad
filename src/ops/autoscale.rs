//! Autoscaling: read the load, decide (scaling::autoscale::decide), act
//! through the same create and delete paths as `scale`, and record every
//! decision, and how acting on it went, with the store, where the cooldown
//! survives between cron runs. With a `heal:` section, each decision is
//! followed by one `heal` pass. Droplets still booting count toward the pool,
//! and create works out under the lock how many the pool still lacks, so a
//! decision taken while earlier ones boot never goes past `max`.

use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use super::create::{Count, CreateOptions, Created, create};
use super::delete::{DeleteOptions, Deletion, delete};
use super::{Context, Waits};
use crate::haproxy;
use crate::model::{Change, Entry, Kind, Severity};
use crate::scaling::autoscale::{Action, Decision, Metric, Policy, PoolSize, Reading, decide};
use crate::scaling::rollout::pool_members;
use crate::scaling::{Pick, Selector};
use crate::text::Printable;

/// Where the state lives in the store.
const STATE: &str = "autoscale";
/// Decisions kept in the history.
const HISTORY: usize = 500;
/// CPU is averaged over this window; older samples are stale.
const CPU_WINDOW: Duration = Duration::from_secs(300);

/// What survives between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// When the pool was last scaled (in or out), for the cooldown.
    last_scaled: Option<u64>,
    history: Vec<Record>,
}

/// One decision, as `autoscale --history` shows it. Kept in the store,
/// where whoever can write it can write text: read back as `Printable`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub at: Printable,
    pub readings: Vec<Reading>,
    #[serde(flatten)]
    pub decision: Decision,
    /// The schedule window whose min and max applied, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Printable>,
    pub dry_run: bool,
    /// What acting on it gave: "done", or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Printable>,
}

/// One decision and what came of acting on it.
#[derive(Debug)]
pub struct Stepped {
    pub record: Record,
    /// What acting did; None when the decision holds, or is only shown.
    pub acted: Option<Acted>,
    /// What went wrong acting on it, or recording it.
    pub failure: Option<anyhow::Error>,
}

/// What acting on a decision did: a create or a delete.
#[derive(Debug)]
pub enum Acted {
    Created(Created),
    Deleted(Deletion),
}

impl Acted {
    pub fn failure(&self) -> Option<anyhow::Error> {
        match self {
            Acted::Created(created) => created.failure(),
            Acted::Deleted(deletion) => deletion.failure(),
        }
    }
}

/// The recorded decisions, oldest first.
pub async fn history(ctx: &Context) -> Result<Vec<Record>> {
    Ok(ctx.load_meta::<State>(STATE).await?.history)
}

/// One decision: measure, decide, act (unless `dry_run`), record.
pub async fn step(ctx: &Context, policy: &Policy, waits: &Waits, dry_run: bool) -> Result<Stepped> {
    // One decision at a time on this proxy (cron and a service may overlap).
    let _deciding = ctx.one_at_a_time("autoscale", waits.lock_timeout).await?;
    let entries = ctx.entries(None).await?;
    super::apply::count_pool(&entries);
    let serving: Vec<Entry> = entries.iter().filter(|e| e.is_serving()).cloned().collect();
    // A replacement under way (rollout, heal) and the droplet it replaces
    // count once: they are one droplet of the pool.
    let pool = PoolSize {
        total: pool_members(&entries).count(),
        serving: serving.len(),
    };
    let readings = read_metrics(ctx, policy, &serving).await;
    let now = SystemTime::now();
    let state = ctx.load_meta::<State>(STATE).await?;
    let last_scaled = state
        .last_scaled
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
    let (policy, window) = policy.scheduled(now);
    let decision = decide(&policy, pool, &readings, last_scaled, now);
    crate::metrics::autoscale(
        decision.current,
        decision.desired,
        decision.target,
        decision.action.as_str(),
    );
    let mut record = Record {
        at: humantime::format_rfc3339_seconds(now).to_string().into(),
        readings,
        decision: decision.clone(),
        window: window.map(|window| Printable::new(&window.to_string())),
        dry_run,
        outcome: None,
    };
    if dry_run || decision.action == Action::Hold {
        save_record(ctx, &record, false, waits.lock_timeout).await?;
        return Ok(Stepped {
            record,
            acted: None,
            failure: None,
        });
    }
    let acted = act(ctx, &decision, waits).await;
    record.outcome = Some(Printable::new(&match &acted {
        Ok(acted) => acted
            .failure()
            .map_or_else(|| "done".to_string(), |err| format!("{err:#}")),
        Err(err) => format!("{err:#}"),
    }));
    let clean = matches!(&acted, Ok(acted) if acted.failure().is_none());
    ctx.record([decided(&record, clean)]).await;
    // Recorded however acting went, failures and interruptions included;
    // a record that cannot be saved never hides what acting did.
    let Err(unsaved) = save_record(ctx, &record, true, waits.lock_timeout).await else {
        let acted = acted?;
        let failure = acted.failure();
        return Ok(Stepped {
            record,
            acted: Some(acted),
            failure,
        });
    };
    let unsaved = format!("the decision could not be recorded ({unsaved:#})");
    let acted = acted.map_err(|err| err.context(unsaved.clone()))?;
    let failure = match acted.failure() {
        Some(failure) => failure.context(unsaved),
        None => {
            anyhow!("{unsaved}; the next decision may scale again sooner than the cooldown allows")
        }
    };
    Ok(Stepped {
        record,
        acted: Some(acted),
        failure: Some(failure),
    })
}

/// The decision acted on, as an event: an error when acting failed.
fn decided(record: &Record, clean: bool) -> Change {
    let decision = &record.decision;
    let change = Change::done(
        Kind::ScaleDecision,
        Vec::new(),
        format!(
            "{} from {} to {} droplet(s) ({}): {}",
            decision.action.as_str(),
            decision.current,
            decision.target,
            decision.reason,
            record.outcome.as_deref().unwrap_or("done")
        ),
    );
    if clean {
        change
    } else {
        change.with_severity(Severity::Error)
    }
}

/// Scales out with `create`, or in with `delete` (drain first, droplets
/// that serve nothing before the newest), each working out under the lock
/// what the pool as it is then needs to reach the target.
async fn act(ctx: &Context, decision: &Decision, waits: &Waits) -> Result<Acted> {
    match decision.action {
        Action::ScaleOut => {
            let options = CreateOptions {
                count: Count::UpTo(decision.target),
                timeout: waits.timeout,
                lock_timeout: waits.lock_timeout,
                ready_wait: true,
                destroy_unready: true,
                // The policy's max bounds it, and no one is there to ask.
                at_most: usize::MAX,
            };
            create(ctx, &options).await.map(Acted::Created)
        }
        Action::ScaleIn => {
            let options = DeleteOptions {
                selector: Selector::Surplus {
                    keep: decision.target,
                    pick: Pick::Newest,
                },
                drain_timeout: waits.drain_timeout,
                lock_timeout: waits.lock_timeout,
                allow_empty: decision.target == 0,
            };
            delete(ctx, &options).await.map(Acted::Deleted)
        }
        Action::Hold => unreachable!("holding does nothing"),
    }
}

/// Every configured metric, averaged per serving droplet; a metric that
/// cannot be read has no value and says why.
async fn read_metrics(ctx: &Context, policy: &Policy, serving: &[Entry]) -> Vec<Reading> {
    let ids: Vec<u64> = serving.iter().map(|e| e.id).collect();
    let needs_haproxy = policy.targets.iter().any(|(m, _)| *m != Metric::CpuPercent);
    let load = if needs_haproxy && !ids.is_empty() {
        Some(haproxy::pool_load(&ctx.config.haproxy, &ids).await)
    } else {
        None
    };
    let mut readings = Vec::new();
    for &(metric, target) in &policy.targets {
        let value: Result<f64> = if ids.is_empty() {
            Err(anyhow::anyhow!("no droplet serves"))
        } else {
            let n = ids.len() as f64;
            match (metric, &load) {
                (Metric::CpuPercent, _) => cpu_percent(ctx, &ids).await,
                (_, Some(Err(err))) => Err(anyhow::anyhow!("{err:#}")),
                (Metric::SessionsPerServer, Some(Ok(load))) => Ok(load.sessions as f64 / n),
                (Metric::RequestRatePerServer, Some(Ok(load))) => Ok(load.rate as f64 / n),
                (Metric::QueuedPerServer, Some(Ok(load))) => Ok(load.queued as f64 / n),
                (Metric::ResponseTimeMs, Some(Ok(load))) => load.response_ms.ok_or_else(|| {
                    anyhow::anyhow!("HAProxy's show stat has no rtime column (HTTP mode only)")
                }),
                (_, None) => unreachable!("HAProxy is read when a HAProxy metric is configured"),
            }
        };
        readings.push(match value {
            Ok(value) => Reading {
                metric,
                target,
                value: Some(value),
                problem: None,
            },
            Err(err) => Reading {
                metric,
                target,
                value: None,
                problem: Some(format!("{err:#}").into()),
            },
        });
    }
    readings
}

/// Mean CPU utilization of the droplets that report fresh data.
async fn cpu_percent(ctx: &Context, ids: &[u64]) -> Result<f64> {
    let api = ctx.api()?;
    let now = SystemTime::now();
    let mut samples = Vec::new();
    for &id in ids {
        if let Some((percent, newest)) = api.droplet_cpu(id, CPU_WINDOW, now).await?
            && now.duration_since(newest).unwrap_or_default() <= CPU_WINDOW
        {
            samples.push(percent);
        }
    }
    anyhow::ensure!(
        !samples.is_empty(),
        "no droplet reported CPU in the last {}",
        humantime::format_duration(CPU_WINDOW)
    );
    Ok(samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Appends `record` to the history (and restarts the cooldown if the pool
/// was scaled), under the store's lock.
async fn save_record(
    ctx: &Context,
    record: &Record,
    scaled: bool,
    lock_timeout: Duration,
) -> Result<()> {
    let lock = ctx.lock(lock_timeout).await?;
    let mut state = ctx.load_meta::<State>(STATE).await?;
    if scaled {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        state.last_scaled = Some(now.as_secs());
    }
    state.history.push(record.clone());
    let excess = state.history.len().saturating_sub(HISTORY);
    state.history.drain(..excess);
    ctx.save_meta(STATE, &state, &lock).await?;
    lock.release().await;
    Ok(())
}
