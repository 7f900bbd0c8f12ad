//! Healing: replace droplets that died after joining the pool — DOWN in
//! HAProxy for longer than the grace period, or off or gone at
//! DigitalOcean — the way a rollout replaces them: the new droplet first,
//! then the old one drained and destroyed. Decisions are
//! scaling::heal's (grace, hourly limit, outage guard); its record (since
//! when each droplet is DOWN, replacements of the last hours) lives with
//! the inventory, so passes from cron, the `heal` service and the
//! `autoscale` loop share it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow};

use super::replace::{Replaced, Settled, create_replacements, settle};
use super::{Context, Waits};
use crate::haproxy;
use crate::model::{Change, Entry, Kind, Severity, Status};
use crate::scaling::heal::{self, Api, Observation, Policy, Record};
use crate::scaling::rollout::pool_members;

/// Where the record lives in the store.
const STATE: &str = "heal";
/// What to run to continue a stopped pass.
const RESUME: &str = "doproxy heal";

/// What a heal pass decided and did.
#[derive(Debug)]
pub struct Healed {
    pub decision: heal::Decision,
    /// Replacements finished in this pass.
    pub replaced: Vec<Replaced>,
    /// Nothing was changed: the decision is only shown.
    pub dry_run: bool,
    /// What went wrong with the replacements, one sentence each.
    pub failures: Vec<String>,
}

impl Healed {
    /// An outage that holds healing back, and replacements that went
    /// wrong, as one error, if any.
    pub fn failure(&self) -> Option<anyhow::Error> {
        let mut problems: Vec<String> = self.decision.outage.iter().cloned().collect();
        if !self.failures.is_empty() {
            problems.push(format!(
                "{}; the droplets they were to replace are left as they are, and the next pass tries again",
                self.failures.join("; ")
            ));
        }
        (!problems.is_empty()).then(|| anyhow!("{}", problems.join("; ")))
    }
}

/// One pass: finishes replacements under way, looks at the pool, decides,
/// records, and replaces (unless a dry run).
pub async fn pass(ctx: &Context, policy: &Policy, waits: &Waits, dry_run: bool) -> Result<Healed> {
    let mut replaced: Vec<Replaced> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    if !dry_run {
        collect(
            settle(ctx, waits, RESUME, Kind::HealReplaced).await?,
            &mut replaced,
            &mut failures,
        );
    }
    let entries = ctx.entries(None).await?;
    let seen = observe(ctx, &entries).await?;
    let now = SystemTime::now();
    let before = ctx.load_meta::<Record>(STATE).await?;
    let mut record = before.clone();
    let (mut decision, mut newly_refused) = judge(&mut record, policy, &seen, now);
    if !dry_run && record != before {
        // Again under the lock, from the record as it is then: passes
        // running at once (cron, the heal service, the autoscale loop,
        // another proxy) each count the replacements the others noted.
        // Noted before the create, so a run killed right after still
        // counts toward the hourly limit.
        let lock = ctx.lock(waits.lock_timeout).await?;
        let mut record = ctx.load_meta::<Record>(STATE).await?;
        (decision, newly_refused) = judge(&mut record, policy, &seen, now);
        ctx.save_meta(STATE, &record, &lock).await?;
        lock.release().await;
    }
    if !dry_run && newly_refused {
        ctx.record(refusal(&decision)).await;
    }
    let doomed: Vec<u64> = decision.replace.iter().map(|v| v.id).collect();
    if !dry_run && !doomed.is_empty() {
        let made = create_replacements(ctx, doomed.clone(), waits, RESUME).await?;
        failures.extend(made.failures);
        collect(
            settle(ctx, waits, RESUME, Kind::HealReplaced).await?,
            &mut replaced,
            &mut failures,
        );
    }

    Ok(Healed {
        decision,
        replaced,
        dry_run,
        failures,
    })
}

/// The droplets the storm guards hold back: every faulty one in an outage
/// (most of the pool DOWN at once), else those past the hourly limit.
fn refused(decision: &heal::Decision) -> Vec<u64> {
    match &decision.outage {
        Some(_) => decision.waiting.iter().map(|v| v.id).collect(),
        None => decision.held_back.clone(),
    }
}

/// What the storm guards held back, as an event.
fn refusal(decision: &heal::Decision) -> Option<Change> {
    let droplets = refused(decision);
    let why = match &decision.outage {
        Some(outage) => outage.clone(),
        None if !droplets.is_empty() => "held back by heal.max_share_per_hour".to_string(),
        None => return None,
    };
    Some(Change::done(Kind::HealRefused, droplets, why).with_severity(Severity::Warning))
}

/// Brings `record` up to date with `seen`, decides, and notes the
/// replacements decided on and what is held back; true when what is held
/// back changed (a refusal to tell).
fn judge(
    record: &mut Record,
    policy: &Policy,
    seen: &[Observation],
    now: SystemTime,
) -> (heal::Decision, bool) {
    heal::observe(record, seen, now);
    let decision = heal::decide(policy, seen, record, now);
    let doomed: Vec<u64> = decision.replace.iter().map(|v| v.id).collect();
    heal::note_replacements(record, &doomed, now);
    let refused = refused(&decision);
    let changed = refused != record.refused;
    record.refused = refused;
    (decision, changed)
}

fn collect(settled: Settled, replaced: &mut Vec<Replaced>, failures: &mut Vec<String>) {
    replaced.extend(settled.replaced);
    failures.extend(settled.unready_failures);
    failures.extend(settled.failures);
}

/// The pool's serving droplets (and those the inventory knows as off) as
/// DigitalOcean (one list of the pool's droplets, plus a lookup of each one
/// missing from it) and HAProxy (its admin socket, when set) see them.
async fn observe(ctx: &Context, entries: &[Entry]) -> Result<Vec<Observation>> {
    let api = ctx.api()?;
    let members: Vec<&Entry> = pool_members(entries)
        .filter(|e| matches!(e.status, Status::Active | Status::Off | Status::Archive))
        .collect();
    let ids: Vec<u64> = members.iter().map(|e| e.id).collect();
    let listed = api
        .list_pool(ctx.config.pool_tag(), &ids)
        .await
        .context("cannot look up the pool's droplets")?;
    let states = match &ctx.config.haproxy.socket {
        None => None,
        Some(_) => match haproxy::server_states(&ctx.config.haproxy).await {
            Ok(states) => Some(states),
            Err(err) => {
                tracing::warn!(
                    "cannot read HAProxy's view ({err:#}); only droplets DigitalOcean reports off or gone are healed this time"
                );
                None
            }
        },
    };
    // By ID, so a pass over 1,000 droplets stays linear.
    let listed: HashMap<u64, &str> = listed.iter().map(|d| (d.id, d.status.as_str())).collect();
    let replaced: HashSet<u64> = entries.iter().filter_map(|e| e.replaces).collect();
    let mut seen = Vec::new();
    for entry in members {
        let status = listed.get(&entry.id).copied();
        let api = match status {
            None => Api::Gone,
            Some(status @ ("off" | "archive")) => Api::Stopped(status.to_string()),
            Some(_) => Api::Running,
        };
        let server = states.as_ref().and_then(|s| s.get(&entry.id));
        seen.push(Observation {
            id: entry.id,
            name: entry.name.to_string(),
            api,
            haproxy: server.map(|s| s.status.clone()),
            haproxy_for: server.and_then(|s| s.last_change).map(Duration::from_secs),
            being_replaced: replaced.contains(&entry.id),
        });
    }
    Ok(seen)
}
