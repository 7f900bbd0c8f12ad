//! `create`: make droplets, record them at once, wait until they are active
//! and ready, then put them in HAProxy with one reload.
//!
//! Each droplet is written to the inventory (status `new`) as soon as the API
//! accepts it, before the wait, so a run killed at any point leaves a record
//! of what it paid for. How many to make is worked out under the lock from
//! the entries read under it (`scale` and `autoscale` ask for a pool size,
//! booting droplets included), and made while still holding it, so runs
//! started together never overshoot. The wait runs without the lock, so
//! concurrent runs overlap their boots; a droplet someone destroys meanwhile
//! is noticed at the next poll. When only part of a batch works out, the
//! droplets that came up are kept and reported, the ones that never became
//! active are destroyed, and the command exits 1.
//!
//! Nothing is paid for that could not be served: before the first create
//! request the config the new droplets need is rendered (with placeholders
//! for them) and checked, HAProxy must answer on its admin socket, and
//! ssh_key_ids must not hold `init`'s placeholder, which DigitalOcean
//! refuses. More
//! droplets at once than confirm_creates_above need a yes, asked before the
//! lock is taken.
//!
//! On SIGTERM or SIGINT a create request already sent is finished and its
//! droplets recorded, no further request is sent, and the waits stop at
//! once: the droplets stay recorded as `new`, out of HAProxy, and the error
//! says how `reconcile --apply` adds them later.
//!
//! Every droplet is recorded with what it was built from (the build), and
//! replacements (rollout, heal) with the droplet each one replaces, in the
//! same write. Rollout and heal call the two halves themselves:
//! `create_replacements` makes and records them, `join` brings them into
//! HAProxy.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use super::{App, Report};
use crate::cli::{CreateArgs, ScaleWaits};
use crate::config::Config;
use crate::digitalocean::{Client, CreateRequest, Droplet};
use crate::haproxy::{self, Applied, Reload};
use crate::listing::abbreviated;
use crate::model::{Build, Entry, Slug, Status, user_data_digest};
use crate::ops::droplet;
use crate::progress;
use crate::readiness;
use crate::scaling::rollout::{pool_members, replaceable};
use crate::scaling::{Pick, Plan, next_names, plan};
use crate::shutdown::{Interrupted, Signal};

/// How often droplets under health checks are looked for, in case someone
/// destroyed them meanwhile.
const GONE_POLL: Duration = Duration::from_secs(2);
/// The API creates at most this many droplets per request.
const MAX_PER_REQUEST: usize = 10;
/// The API refuses larger user data.
const MAX_USER_DATA: usize = 64 * 1024;

/// How many droplets to make.
#[derive(Debug, Clone)]
pub enum Count {
    /// This many more (`create --count N`).
    More(usize),
    /// As many as the pool (every entry not being destroyed, booting ones
    /// included) lacks to reach this size; none if it has that many.
    UpTo(usize),
    /// One replacement for each of these droplets, recorded as replacing
    /// it. Worked out under the lock: a droplet no longer in the pool, being
    /// destroyed or already being replaced gets none, so two runs never
    /// replace one droplet twice.
    Replacing(Vec<u64>),
}

/// What a create asks for; `scale` and `autoscale` build one too.
pub struct CreateOptions {
    pub count: Count,
    pub timeout: Duration,
    pub lock_timeout: Duration,
    pub ready_wait: bool,
    pub destroy_unready: bool,
    /// The most droplets this run may make (see `agreed_count`); the count
    /// worked out under the lock must stay within it.
    pub at_most: usize,
}

impl CreateOptions {
    /// Replacements for `doomed` (rollout, heal): each must pass the health
    /// check, and those that never do are destroyed.
    pub fn replacing(doomed: Vec<u64>, waits: &ScaleWaits) -> CreateOptions {
        CreateOptions {
            count: Count::Replacing(doomed),
            timeout: waits.timeout,
            lock_timeout: waits.lock.lock_timeout,
            ready_wait: true,
            destroy_unready: true,
            at_most: usize::MAX,
        }
    }
}

pub async fn run(app: &App, args: &CreateArgs) -> Result<Report> {
    let count = args.count as usize;
    let command = format!("create --count {count}");
    let options = CreateOptions {
        count: Count::More(count),
        timeout: args.timeout,
        lock_timeout: args.lock.lock_timeout,
        ready_wait: !args.no_ready_wait,
        destroy_unready: args.destroy_unready,
        at_most: agreed_count(app, count, args.yes, &command).await?,
    };
    create(app, &options).await
}

/// The most droplets a run of `command` that asks for `count` may make: up
/// to confirm_creates_above need no agreement; more need --yes (`yes`) or a
/// yes on the terminal, asked here, before any lock is taken.
pub async fn agreed_count(app: &App, count: usize, yes: bool, command: &str) -> Result<usize> {
    let threshold = app.config.confirm_creates_above;
    if yes {
        return Ok(usize::MAX);
    }
    if count <= threshold {
        return Ok(threshold);
    }
    let question =
        format!("{command} creates {count} droplets, each billed from now on. Go ahead?");
    if super::confirmed(&[], &question).await? {
        return Ok(count);
    }
    bail!(
        "{command} would create {count} droplets, more than confirm_creates_above ({threshold}), and was not confirmed, so nothing was created; add --yes to go ahead"
    )
}

pub async fn create(app: &App, options: &CreateOptions) -> Result<Report> {
    let made = create_and_record(app, options).await?;
    let created: Vec<u64> = made.droplets.iter().map(|d| d.id).collect();
    if let Err(stopped) = app.shutdown.check() {
        return Err(stopped_create(
            stopped.signal,
            Stage::Created,
            &created,
            Resume::Reconcile,
        ));
    }
    if created.is_empty() {
        tracing::info!(
            "the pool has {} droplet(s) already; nothing to create",
            made.pool_size
        );
        return Report::new(
            Vec::new(),
            json!({ "created": [], "unready": [], "destroyed": [], "haproxy": null }),
        );
    }
    let joined = join(app, &made.droplets, options, Resume::Reconcile).await?;
    let failures: Vec<String> = made.failures.into_iter().chain(joined.failures).collect();
    let text = created
        .iter()
        .filter(|id| joined.ready.contains(id))
        .map(|id| format!("Success: {id} created and added to backend."))
        .collect();
    let added: Vec<&Entry> = joined
        .entries
        .iter()
        .filter(|e| joined.ready.contains(&e.id))
        .collect();
    let report = Report::new(
        text,
        json!({ "created": added, "unready": joined.unready, "destroyed": joined.destroyed, "haproxy": joined.applied }),
    )?;
    if failures.is_empty() {
        return Ok(report);
    }
    Ok(report.failed(anyhow!("{}", failures.join("; "))))
}

/// How a stopped create or join says what to run about the droplets it left.
#[derive(Debug, Clone, Copy)]
pub enum Resume {
    /// `reconcile --apply` adds them, `delete` destroys them.
    Reconcile,
    /// This command continues where it stopped (`doproxy rollout`).
    Run(&'static str),
}

/// How `join` went.
pub struct Joined {
    /// Passed the health check (or no wait was asked for): in HAProxy now.
    pub ready: Vec<u64>,
    /// Active, but never answered the health check.
    pub unready: Vec<u64>,
    /// Destroyed: stuck in their boot, or unready with destroy_unready.
    pub destroyed: Vec<u64>,
    /// One sentence each about what went wrong.
    pub failures: Vec<String>,
    /// The inventory as saved.
    pub entries: Vec<Entry>,
    pub applied: Applied,
}

/// Waits (without the lock) until `droplets`, recorded as `new`, are active
/// and pass the health check, destroys those stuck in their boot (and the
/// unready ones with `destroy_unready`), then records the outcome under the
/// lock and updates HAProxy with one reload. A signal stops the waits at
/// once, the droplets staying `new`; the error says what to run (`resume`).
pub async fn join(
    app: &App,
    droplets: &[Droplet],
    options: &CreateOptions,
    resume: Resume,
) -> Result<Joined> {
    let config = &app.config;
    let api = app.api()?;
    let created: Vec<u64> = droplets.iter().map(|d| d.id).collect();
    let mut failures = Vec::new();

    // Without the lock, so other runs can create and delete while these boot.
    let mut boot = tokio::select! {
        stopped = app.shutdown.signalled() => {
            return Err(stopped_create(stopped.signal, Stage::Booting, &created, resume));
        }
        boot = wait_until_active(api, config.pool_tag(), droplets, options.timeout) => boot?,
    };
    let booted: Vec<(u64, Ipv4Addr)> = boot
        .active
        .iter()
        .filter_map(|d| Some((d.id, d.private_ipv4()?)))
        .collect();
    let gone = readiness::Gone::default();
    let ready = if options.ready_wait {
        let check = &config.health_check;
        let booted_ids: Vec<u64> = booted.iter().map(|(id, _)| *id).collect();
        tokio::select! {
            stopped = app.shutdown.signalled() => {
                return Err(stopped_create(stopped.signal, Stage::Readiness, &created, resume));
            }
            ready = readiness::wait_until_ready_unless_gone(check, &booted, check.ready_timeout, &gone) => ready?,
            never = notice_gone(api, config.pool_tag(), &booted_ids, &gone) => match never {},
        }
    } else {
        booted.iter().map(|(id, _)| *id).collect()
    };
    // Destroyed by someone while their health checks ran: gone like those
    // destroyed while they booted.
    let destroyed_meanwhile = gone.lock().unwrap_or_else(|e| e.into_inner()).clone();
    boot.active.retain(|d| {
        if destroyed_meanwhile.contains(&d.id) {
            boot.gone.push(d.clone());
            return false;
        }
        true
    });
    let booted: Vec<(u64, Ipv4Addr)> = booted
        .into_iter()
        .filter(|(id, _)| !destroyed_meanwhile.contains(id))
        .collect();
    let unready: Vec<u64> = booted
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !ready.contains(id))
        .collect();
    if !boot.gone.is_empty() {
        let gone: Vec<String> = boot
            .gone
            .iter()
            .map(|d| format!("{} ({})", d.id, d.name))
            .collect();
        failures.push(format!(
            "droplet(s) {} no longer exist: another doproxy run or someone in the control panel destroyed them while this create waited for them to boot or answer the health check, so they are dropped from the inventory; run doproxy create again if the pool still needs them",
            abbreviated(&gone)
        ));
    }
    let mut doomed = boot.stuck.clone();
    if options.destroy_unready {
        doomed.extend(&unready);
    }
    // Droplets a rollout or heal resumes come from the inventory, which
    // may list any droplet of the account: only the pool's are destroyed,
    // and the others are named on their own.
    let destroying = destroyable(app, &doomed, &mut failures).await;
    let spared = |id: &u64| doomed.contains(id) && !destroying.contains(id);
    let stuck: Vec<u64> = boot
        .stuck
        .iter()
        .copied()
        .filter(|id| !spared(id))
        .collect();
    if !stuck.is_empty() {
        failures.push(format!(
            "droplet(s) {} did not become active within {}, so they were destroyed",
            abbreviated(&stuck),
            humantime::format_duration(options.timeout)
        ));
    }
    let unready_named: Vec<u64> = unready.iter().copied().filter(|id| !spared(id)).collect();
    if !unready_named.is_empty() {
        failures.push(unready_failure(
            config,
            &unready_named,
            options.destroy_unready,
        ));
    }
    let mut destroyed = Vec::new();
    for (id, outcome) in api.delete_droplets(&destroying).await {
        match outcome {
            Ok(_) => destroyed.push(id),
            Err(err) => failures.push(format!(
                "could not destroy droplet {id} ({err}); run doproxy reconcile --apply"
            )),
        }
    }

    // Under the lock again: record the outcome, then one reload for the
    // batch. A failure here must not hide the ones above.
    let earlier = |err: anyhow::Error| {
        if failures.is_empty() {
            err
        } else {
            err.context(format!("{}; then", failures.join("; ")))
        }
    };
    let lock = app
        .lock(options.lock_timeout)
        .await
        .map_err(|err| earlier(stopped_in(err, Stage::Recording, &created, resume)))?;
    let mut entries = app.entries(Some(&lock)).await.map_err(earlier)?;
    entries.retain(|e| !destroyed.contains(&e.id) && !boot.gone.iter().any(|d| d.id == e.id));
    for entry in entries.iter_mut().filter(|e| created.contains(&e.id)) {
        if let Some(droplet) = boot.active.iter().find(|d| d.id == entry.id) {
            droplet::update(entry, droplet)?;
        }
        if ready.contains(&entry.id) {
            entry.status = Status::Active;
        } else if unready.contains(&entry.id) {
            entry.status = Status::Unready;
        }
    }
    app.store
        .save(&entries, &lock)
        .await
        .with_context(|| {
            format!(
                "droplet(s) {} are recorded as new, but how their boot went could not be saved; run doproxy reconcile --apply once this is fixed",
                abbreviated(&created)
            )
        })
        .map_err(earlier)?;
    let applied = crate::ops::apply::apply(
        config,
        app.frontend_bind().await,
        &entries,
        Reload::IfChanged,
        false,
    )
    .await
    .context("the droplets are active and recorded in the inventory, but HAProxy was not updated")
    .map_err(earlier)?;

    crate::metrics::scaled(crate::metrics::Direction::Out, ready.len());
    lock.release().await;
    Ok(Joined {
        ready,
        unready,
        destroyed,
        failures,
        entries,
        applied,
    })
}

/// What `create_and_record` made.
pub struct Made {
    /// As the API described them when it accepted them.
    pub droplets: Vec<Droplet>,
    /// Why a later batch failed when an earlier one worked, and project
    /// assignments that failed.
    pub failures: Vec<String>,
    /// The pool's size under the lock, before these, counted as `plan`
    /// counts it (a replacement under way and its droplet once).
    pool_size: usize,
}

/// The build new droplets get from the options now, and the user data to
/// send; an error names the missing option or the unreadable file.
pub fn current_build(config: &Config) -> Result<(Build, Option<String>)> {
    let spec = config.droplet_spec()?;
    let user_data = read_user_data(config)?;
    let image = spec.image.to_string();
    // What the inventory records must be as safe to read back as the rest.
    let slug = |key: &'static str, value: &str| {
        Slug::parse(key, value).map_err(|err| {
            anyhow!(
                "droplet_options.{err} in {}; fix it there",
                config.path.display()
            )
        })
    };
    let build = Build {
        image: slug("image", &image)?,
        size: slug("size", spec.size)?,
        region: slug("region", spec.region)?,
        user_data: user_data.as_deref().map(user_data_digest),
        tags: config
            .droplets
            .tags
            .iter()
            .map(|tag| slug("tags", tag))
            .collect::<Result<_>>()?,
        vpc: config
            .droplets
            .features
            .vpc_uuid
            .as_deref()
            .map(|vpc| slug("vpc_uuid", vpc))
            .transpose()?,
    };
    Ok((build, user_data))
}

/// Replacements for droplets `doomed` (rollout, heal), created and recorded
/// like any create; when a signal came meanwhile, the error says to run
/// `resume` to go on from there.
pub async fn create_replacements(
    app: &App,
    doomed: Vec<u64>,
    waits: &ScaleWaits,
    resume: &'static str,
) -> Result<Made> {
    let made = create_and_record(app, &CreateOptions::replacing(doomed, waits)).await?;
    if let Err(stopped) = app.shutdown.check() {
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

/// Under the lock: works out how many to make from the locked inventory,
/// picks free names, creates the droplets (up to ten per request) and
/// records each batch, with its build and what it replaces, as soon as the
/// API accepts it; then assigns them to droplet_options.project_id (a
/// failure there is reported, the droplets stay recorded). Sends no further
/// request once a stop is asked for. Fails only when nothing was created.
async fn create_and_record(app: &App, options: &CreateOptions) -> Result<Made> {
    let config = &app.config;
    let spec = config.droplet_spec()?;
    let (build, user_data) = current_build(config)?;
    let features = &config.droplets.features;
    let api = app.api()?;
    let lock = app
        .lock(options.lock_timeout)
        .await
        .map_err(|err| stopped_in(err, Stage::Created, &[], Resume::Reconcile))?;
    let mut entries = app.entries(Some(&lock)).await?;
    let pool_size = pool_members(&entries).count();
    let wanted = wanted(&entries, &options.count);
    if wanted.len() > options.at_most {
        lock.release().await;
        bail!(
            "the pool shrank meanwhile, so this run would now create {} droplets, more than the {} it may without asking, and nothing was created; run it again to be asked anew",
            wanted.len(),
            options.at_most
        );
    }
    let all_names = next_names(
        spec.hostname_prefix,
        entries.iter().map(|e| e.name.as_str()),
        wanted.len(),
    );
    if !wanted.is_empty()
        && let Err(err) = check_before_paying(app, &entries, &all_names, &wanted).await
    {
        lock.release().await;
        return Err(err.context("no droplet was created"));
    }
    let mut failures = Vec::new();
    let mut created: Vec<Droplet> = Vec::new();
    for batch in all_names.chunks(MAX_PER_REQUEST) {
        if app.shutdown.check().is_err() {
            break;
        }
        let (name, names) = match batch {
            [one] => (Some(one.as_str()), None),
            many => (None, Some(many)),
        };
        let request = CreateRequest {
            name,
            names,
            region: spec.region,
            size: spec.size,
            image: spec.image,
            ssh_keys: &config.droplets.ssh_keys,
            user_data: user_data.as_deref(),
            tags: &config.droplets.tags,
            monitoring: features.monitoring,
            vpc_uuid: features.vpc_uuid.as_deref(),
            ipv6: features.ipv6,
            backups: features.backups,
            with_droplet_agent: features.with_droplet_agent,
        };
        lock.check().await?;
        // Never cut short by a signal: what the API makes gets recorded.
        let outcome = match api.create_droplets(&request, config.pool_tag()).await {
            Ok(outcome) => outcome,
            Err(err) => {
                let what = format!(
                    "cannot create droplet(s) {}{}",
                    batch.join(", "),
                    if err.is_transient() && !err.had_no_effect() {
                        " (if DigitalOcean made them after all, doproxy reconcile --apply adopts them)"
                    } else {
                        ""
                    }
                );
                if created.is_empty() {
                    return Err(anyhow::Error::new(err).context(what));
                }
                lock.release().await;
                failures.push(format!("{what}: {err}"));
                return Ok(Made {
                    droplets: created,
                    failures,
                    pool_size,
                });
            }
        };
        if outcome.recovered {
            tracing::info!(
                "the lost create did make {} droplet(s); not creating them again",
                outcome.droplets.len()
            );
        }
        let mut refused = None;
        for droplet in &outcome.droplets {
            tracing::info!(
                "droplet {} ({:?}) accepted; waiting for it to become active",
                droplet.id,
                droplet.name
            );
            let replaces = all_names
                .iter()
                .position(|name| *name == droplet.name)
                .and_then(|i| wanted[i]);
            match droplet::entry_of(droplet) {
                Ok(entry) => entries.push(Entry {
                    build: Some(build.clone()),
                    replaces,
                    ..entry
                }),
                Err(err) => refused = Some(err),
            }
        }
        let ids: Vec<u64> = outcome.droplets.iter().map(|d| d.id).collect();
        created.extend(outcome.droplets);
        app.store.save(&entries, &lock).await.with_context(|| {
            format!(
                "droplet(s) {} were created but could not be recorded in {}: they run and cost money until doproxy reconcile --apply adopts them (or you destroy them), so make the inventory writable and run it",
                abbreviated(&ids),
                app.store.describe()
            )
        })?;
        if let Some(refused) = refused {
            lock.release().await;
            bail!(
                "{refused} (it was created, and costs money until then; the droplets recorded with it join with doproxy reconcile --apply)"
            );
        }
        if let Some(project) = &features.project_id {
            lock.check().await?;
            if let Err(err) = api.assign_to_project(project, &ids).await {
                failures.push(format!(
                    "droplet(s) {} could not be assigned to project {project} ({err}), so they run in the account's default project; check droplet_options.project_id (doctl projects list) and move them in the control panel",
                    abbreviated(&ids)
                ));
            }
        }
    }
    lock.release().await;
    Ok(Made {
        droplets: created,
        failures,
        pool_size,
    })
}

/// What must hold before droplets `names` are paid for: DigitalOcean
/// would accept the SSH keys (not `init`'s placeholder), the droplets they
/// are to replace (`wanted`, see `wanted`) are the pool's, so they can be
/// retired once replaced, and HAProxy could serve them beside the pool
/// `entries`.
async fn check_before_paying(
    app: &App,
    entries: &[Entry],
    names: &[String],
    wanted: &[Option<u64>],
) -> Result<()> {
    let config = &app.config;
    config.check_ssh_keys()?;
    let replaced: Vec<u64> = wanted.iter().flatten().copied().collect();
    if !replaced.is_empty() {
        let seen = app
            .api()?
            .look_up(config.pool_tag(), &replaced, entries.len())
            .await
            .context("DigitalOcean could not show that the droplets to replace are the pool's")?;
        app.refuse_foreign(&seen).await?;
    }
    haproxy::check_servable(
        &config.haproxy,
        app.frontend_bind().await,
        &with_placeholders(entries, names),
    )
    .await
}

/// Of droplets `ids`, the ones that may be destroyed: those DigitalOcean
/// shows as the pool's, or no longer knows. Why the others are not
/// destroyed goes to `failures`.
async fn destroyable(app: &App, ids: &[u64], failures: &mut Vec<String>) -> Vec<u64> {
    if ids.is_empty() {
        return Vec::new();
    }
    let pool_size = app.store.load().await.map_or(ids.len(), |e| e.len());
    let seen = match app.api() {
        Ok(api) => api
            .look_up(app.config.pool_tag(), ids, pool_size)
            .await
            .map_err(anyhow::Error::new),
        Err(err) => Err(err),
    };
    let refused = match seen {
        Ok(seen) => app.not_the_pools(&seen).await,
        Err(err) => {
            failures.push(format!(
                "droplet(s) {} were not destroyed, since DigitalOcean could not show that they are the pool's ({err:#}); run doproxy reconcile --apply",
                abbreviated(ids)
            ));
            return Vec::new();
        }
    };
    failures.extend(refused.iter().map(|(_, sentence)| {
        format!("{sentence}, so it was not destroyed; remove that entry from the inventory")
    }));
    ids.iter()
        .copied()
        .filter(|id| !refused.iter().any(|(refused, _)| refused == id))
        .collect()
}

/// The pool `entries` as it will be once the droplets `names` serve: each
/// an active entry with an unused ID and a documentation address
/// (192.0.2.0/24, never routed), so the config they will need can be
/// rendered and checked before they are paid for.
fn with_placeholders(entries: &[Entry], names: &[String]) -> Vec<Entry> {
    let first_id = entries.iter().map(|e| e.id).max().unwrap_or(0) + 1;
    let mut planned = entries.to_vec();
    planned.extend(
        names
            .iter()
            .zip(first_id..)
            .enumerate()
            .map(|(i, (name, id))| Entry {
                private_ip: Some(Ipv4Addr::new(192, 0, 2, 1 + (i % 254) as u8)),
                ..Entry::named(id, name)
            }),
    );
    planned
}

/// The droplets `count` asks for, given the inventory read under the lock:
/// one element per droplet to make, holding the droplet it replaces.
fn wanted(entries: &[Entry], count: &Count) -> Vec<Option<u64>> {
    match count {
        Count::More(count) => vec![None; *count],
        Count::UpTo(size) => match plan(entries, *size, Pick::Newest) {
            Plan::Add { count } => vec![None; count],
            Plan::Stay { .. } | Plan::Remove { .. } => Vec::new(),
        },
        Count::Replacing(ids) => ids
            .iter()
            .copied()
            .filter(|id| replaceable(entries, *id).is_some())
            .map(Some)
            .collect(),
    }
}

/// Where a create was when a signal stopped it.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// The droplets were created (or none yet).
    Created,
    Booting,
    Readiness,
    /// Waiting for the lock to record how the wait went.
    Recording,
}

/// `err` as `stopped_create` says it, when a signal stopped a lock wait.
fn stopped_in(err: anyhow::Error, stage: Stage, created: &[u64], resume: Resume) -> anyhow::Error {
    match err.downcast::<Interrupted>() {
        Ok(stopped) => stopped_create(stopped.signal, stage, created, resume),
        Err(err) => err,
    }
}

/// The one sentence a stopped create ends with: what it left behind, and
/// what to run about it.
fn stopped_create(signal: Signal, stage: Stage, created: &[u64], resume: Resume) -> anyhow::Error {
    let stopped = format!("stopped by {signal}");
    if created.is_empty() {
        return anyhow!("{stopped} before any droplet was created; nothing changed");
    }
    let ids = abbreviated(created);
    let when = match stage {
        Stage::Created => format!("after creating droplet(s) {ids}"),
        Stage::Booting => format!("while droplet(s) {ids} booted"),
        Stage::Readiness => format!("while droplet(s) {ids} were checked for readiness"),
        Stage::Recording => format!("while droplet(s) {ids} waited for the inventory lock"),
    };
    let what_to_run = match resume {
        Resume::Reconcile => {
            let spaced: Vec<String> = created.iter().map(u64::to_string).collect();
            format!(
                "run doproxy reconcile --apply to add them once they answer the health check, or doproxy delete --id {} to destroy them",
                spaced.join(" ")
            )
        }
        Resume::Run(command) => format!("run {command} again to continue where it stopped"),
    };
    anyhow!(
        "{stopped} {when}; they are recorded in the inventory as new and kept out of HAProxy: {what_to_run}"
    )
}

fn unready_failure(config: &Config, unready: &[u64], destroyed: bool) -> String {
    let check = &config.health_check;
    let what = format!(
        "droplet(s) {} did not answer GET {} on port {} with {} within {}",
        abbreviated(unready),
        check.path,
        check.port,
        check.status,
        humantime::format_duration(check.ready_timeout)
    );
    if destroyed {
        format!(
            "{what}, so they were destroyed; check the user data (userdata_file) and the health check settings"
        )
    } else {
        format!(
            "{what}; they are kept out of HAProxy as unready: fix them and run doproxy reconcile --apply to add them, or delete them with doproxy delete --id {}",
            unready
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// The user data to send: the contents of userdata_file, if one is set.
fn read_user_data(config: &Config) -> Result<Option<String>> {
    let Some(path) = &config.droplets.userdata_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read userdata_file {}; fix the path in {}, or remove the key to create droplets without user data",
            path.display(),
            config.path.display()
        )
    })?;
    if text.len() > MAX_USER_DATA {
        bail!(
            "userdata_file {} is {} bytes; DigitalOcean accepts at most 64 KiB, so shorten it",
            path.display(),
            text.len()
        );
    }
    Ok(Some(text))
}

/// How the wait for new droplets ended.
pub(super) struct Boot {
    /// Active, with a private address.
    pub(super) active: Vec<Droplet>,
    /// Still not active when the time was up.
    pub(super) stuck: Vec<u64>,
    /// Destroyed by someone else meanwhile (the API no longer knows them).
    gone: Vec<Droplet>,
}

/// While health checks run: looks for the droplets `ids` every few seconds
/// (one list of the pool) and puts those the API no longer knows in `gone`,
/// so their checks stop at once. Runs until dropped; a failed look is tried
/// again next time.
async fn notice_gone(
    api: &Client,
    tag: &str,
    ids: &[u64],
    gone: &readiness::Gone,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(GONE_POLL).await;
        match api.list_pool(tag, ids).await {
            Ok(listed) => {
                let mut gone = gone.lock().unwrap_or_else(|e| e.into_inner());
                gone.extend(ids.iter().filter(|id| !listed.iter().any(|d| d.id == **id)));
            }
            Err(err) => tracing::debug!("cannot look for the droplets being checked: {err}"),
        }
    }
}

/// Polls the pool's droplets (one list call per poll, whatever their number)
/// until every droplet of `created` is active with a private address or
/// gone, or `timeout` passes. A droplet the API no longer knows was
/// destroyed by someone, which is no reason to wait on.
pub(super) async fn wait_until_active(
    api: &Client,
    tag: &str,
    created: &[Droplet],
    timeout: Duration,
) -> Result<Boot> {
    let started = Instant::now();
    let mut pending: Vec<&Droplet> = created.iter().collect();
    let mut active = Vec::new();
    let mut gone = Vec::new();
    let mut status = progress::Status::new();
    loop {
        status.show(&format!(
            "{} of {} droplet(s) active",
            active.len(),
            created.len()
        ));
        tokio::time::sleep(poll_interval(started.elapsed())).await;
        let ids: Vec<u64> = pending.iter().map(|d| d.id).collect();
        let seen = api
            .list_pool(tag, &ids)
            .await
            .context("cannot check on the new droplets")?;
        pending.retain(|new| match seen.iter().find(|d| d.id == new.id) {
            None => {
                tracing::warn!(
                    "droplet {} ({}) no longer exists: another run or someone in the control panel destroyed it",
                    new.id,
                    new.name
                );
                gone.push((*new).clone());
                false
            }
            Some(droplet) => match (Status::from_api(&droplet.status), droplet.private_ipv4()) {
                (Status::Active, Some(ip)) => {
                    tracing::info!(
                        "droplet {} ({}) is active at {ip}",
                        droplet.id,
                        droplet.name
                    );
                    active.push(droplet.clone());
                    false
                }
                _ => true,
            },
        });
        if pending.is_empty() || started.elapsed() >= timeout {
            return Ok(Boot {
                active,
                stuck: pending.iter().map(|d| d.id).collect(),
                gone,
            });
        }
    }
}

/// Short polls while a droplet may be about to come up (a boot takes
/// seconds), longer ones once it is clearly taking its time.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(10) {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_worked_out_from_the_locked_inventory() {
        let entry = |id, status, replaces| Entry {
            status,
            replaces,
            ..Entry::named(id, &format!("web-{id}"))
        };
        let entries = [
            entry(1, Status::Active, None),
            entry(2, Status::New, Some(1)),
            entry(3, Status::Destroying, None),
        ];
        assert_eq!(wanted(&entries, &Count::More(2)), [None, None]);
        // 1 and its replacement 2 count once; 3 is on its way out.
        assert_eq!(wanted(&entries, &Count::UpTo(3)), [None, None]);
        assert_eq!(wanted(&entries, &Count::UpTo(1)), []);
        assert_eq!(
            wanted(&entries, &Count::Replacing(vec![1, 4, 2])),
            [Some(2)],
            "1 is being replaced already, 4 is gone"
        );
    }

    #[test]
    fn placeholders_serve_beside_the_pool_without_taking_its_ids() {
        let pool = [Entry {
            private_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ..Entry::named(7, "web-0")
        }];
        let names = ["web-1".to_string(), "web-2".to_string()];
        let planned = with_placeholders(&pool, &names);
        assert_eq!(planned[0], pool[0]);
        let ids: Vec<u64> = planned.iter().map(|e| e.id).collect();
        assert_eq!(ids, [7, 8, 9]);
        assert_eq!(planned[2].name, "web-2");
        assert!(planned.iter().all(Entry::is_serving));
        assert_eq!(planned[1].private_ip, Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn polls_stay_within_two_seconds() {
        assert_eq!(poll_interval(Duration::ZERO), Duration::from_millis(250));
        assert_eq!(
            poll_interval(Duration::from_secs(60)),
            Duration::from_secs(2)
        );
    }
}
