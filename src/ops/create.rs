//! Making droplets: record them at once, then (`join`) wait until they are
//! active and ready and put them in HAProxy with one reload.
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
//! active are destroyed, and the failures are reported with them.
//!
//! Nothing is paid for that could not be served: before the first create
//! request the config the new droplets need is rendered (with placeholders
//! for them) and checked, HAProxy must answer on its admin socket, and
//! ssh_key_ids must not hold `init`'s placeholder, which DigitalOcean
//! refuses. More droplets at once than confirm_creates_above need a yes,
//! asked (by the command) before the lock is taken (`CreateOptions::at_most`).
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

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use super::join::{Resume, Stage, join, stopped_create, stopped_in};
use super::{Context, Waits, droplet};
use crate::config::Config;
use crate::digitalocean::{CreateRequest, Droplet};
use crate::haproxy::{self, Applied};
use crate::listing::abbreviated;
use crate::model::{Build, Change, Entry, Kind, Severity, Slug, user_data_digest};
use crate::scaling::rollout::{pool_members, replaceable};
use crate::scaling::{Pick, Plan, next_names, plan};

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
    pub fn replacing(doomed: Vec<u64>, waits: &Waits) -> CreateOptions {
        CreateOptions {
            count: Count::Replacing(doomed),
            timeout: waits.timeout,
            lock_timeout: waits.lock_timeout,
            ready_wait: true,
            destroy_unready: true,
            at_most: usize::MAX,
        }
    }
}

/// What a create made of the pool.
#[derive(Debug, Default)]
pub struct Created {
    /// Passed the health check (or no wait was asked for): in HAProxy now,
    /// in the order they were created.
    pub ready: Vec<u64>,
    /// Their entries, as the inventory holds them.
    pub added: Vec<Entry>,
    /// Active, but never answered the health check.
    pub unready: Vec<u64>,
    /// Destroyed: stuck in their boot, or unready with destroy_unready.
    pub destroyed: Vec<u64>,
    /// How HAProxy was updated; None when nothing was created (the pool
    /// had its size already).
    pub applied: Option<Applied>,
    /// One sentence each about what went wrong.
    pub failures: Vec<String>,
}

impl Created {
    /// What went wrong, as one error, if anything did.
    pub fn failure(&self) -> Option<anyhow::Error> {
        (!self.failures.is_empty()).then(|| anyhow!("{}", self.failures.join("; ")))
    }
}

/// Makes and records the droplets `options` ask for, then joins them.
pub async fn create(ctx: &Context, options: &CreateOptions) -> Result<Created> {
    let made = create_and_record(ctx, options).await?;
    let created: Vec<u64> = made.droplets.iter().map(|d| d.id).collect();
    if let Err(stopped) = ctx.shutdown.check() {
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
        return Ok(Created::default());
    }
    let joined = join(ctx, &made.droplets, options, Resume::Reconcile).await?;
    let joined_ready: HashSet<u64> = joined.ready.iter().copied().collect();
    let ready = created
        .iter()
        .copied()
        .filter(|id| joined_ready.contains(id))
        .collect();
    let added = joined
        .entries
        .into_iter()
        .filter(|e| joined_ready.contains(&e.id))
        .collect();
    Ok(Created {
        ready,
        added,
        unready: joined.unready,
        destroyed: joined.destroyed,
        applied: Some(joined.applied),
        failures: made.failures.into_iter().chain(joined.failures).collect(),
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

impl Made {
    /// The droplets DigitalOcean accepted; a warning when a later batch
    /// or a project assignment failed.
    fn changes(&self) -> Option<Change> {
        if self.droplets.is_empty() {
            return None;
        }
        let ids: Vec<u64> = self.droplets.iter().map(|d| d.id).collect();
        let made = format!("created {} droplet(s)", ids.len());
        Some(if self.failures.is_empty() {
            Change::done(Kind::DropletCreated, ids, made)
        } else {
            Change::done(
                Kind::DropletCreated,
                ids,
                format!("{made}; {}", self.failures.join("; ")),
            )
            .with_severity(Severity::Warning)
        })
    }
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

/// Under the lock: works out how many to make from the locked inventory,
/// picks free names, creates the droplets (up to ten per request) and
/// records each batch, with its build and what it replaces, as soon as the
/// API accepts it; then assigns them to droplet_options.project_id (a
/// failure there is reported, the droplets stay recorded). Sends no further
/// request once a stop is asked for. Fails only when nothing was created.
pub(super) async fn create_and_record(ctx: &Context, options: &CreateOptions) -> Result<Made> {
    let made = make_and_record(ctx, options).await?;
    ctx.record(made.changes()).await;
    Ok(made)
}

async fn make_and_record(ctx: &Context, options: &CreateOptions) -> Result<Made> {
    let config = &ctx.config;
    let spec = config.droplet_spec()?;
    let (build, user_data) = current_build(config)?;
    let features = &config.droplets.features;
    let api = ctx.api()?;
    let lock = ctx
        .lock(options.lock_timeout)
        .await
        .map_err(|err| stopped_in(err, Stage::Created, &[], Resume::Reconcile))?;
    let mut entries = ctx.entries(Some(&lock)).await?;
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
        && let Err(err) = check_before_paying(ctx, &entries, &all_names, &wanted).await
    {
        lock.release().await;
        return Err(err.context("no droplet was created"));
    }
    let mut failures = Vec::new();
    let mut created: Vec<Droplet> = Vec::new();
    // What each name's droplet replaces, by name.
    let replacing: HashMap<&str, Option<u64>> = all_names
        .iter()
        .map(String::as_str)
        .zip(wanted.iter().copied())
        .collect();
    for batch in all_names.chunks(MAX_PER_REQUEST) {
        if ctx.shutdown.check().is_err() {
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
            let replaces = replacing.get(droplet.name.as_str()).copied().flatten();
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
        ctx.store.save(&entries, &lock).await.with_context(|| {
            format!(
                "droplet(s) {} were created but could not be recorded in {}: they run and cost money until doproxy reconcile --apply adopts them (or you destroy them), so make the inventory writable and run it",
                abbreviated(&ids),
                ctx.store.describe()
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
    ctx: &Context,
    entries: &[Entry],
    names: &[String],
    wanted: &[Option<u64>],
) -> Result<()> {
    let config = &ctx.config;
    config.check_ssh_keys()?;
    let replaced: Vec<u64> = wanted.iter().flatten().copied().collect();
    if !replaced.is_empty() {
        let seen = ctx
            .api()?
            .look_up(config.pool_tag(), &replaced, entries.len())
            .await
            .context("DigitalOcean could not show that the droplets to replace are the pool's")?;
        ctx.refuse_foreign(&seen).await?;
    }
    haproxy::check_servable(
        &config.haproxy,
        ctx.frontend_bind().await,
        &with_placeholders(entries, names),
    )
    .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

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
}
