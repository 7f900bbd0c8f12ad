//! Each command's own arguments, with the help text users see.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::parse_duration;

#[derive(Debug, Args)]
pub struct PrintArgs {
    /// Update status and addresses from the API first (one request per 200
    /// droplets) and save them in the inventory.
    #[arg(long)]
    pub refresh: bool,

    /// Add each server's state in the running HAProxy (UP, DOWN, DRAIN,
    /// MAINT), read from haproxy_socket. UP means fully up; a server one or
    /// more checks short of that reads `rising (UP 1/2)` while its checks
    /// pass (a new server) and `failing (UP 1/2)` once one fails. When
    /// HAProxy does not answer, the states read `unknown` and a warning
    /// says why.
    #[arg(long)]
    pub health: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Fix the differences: drop entries whose droplet is gone, adopt
    /// orphans, update changed entries, finish unfinished deletes, tag
    /// untagged droplets; then reload HAProxy if its servers changed.
    #[arg(long)]
    pub apply: bool,

    /// With --apply: destroy orphans instead of adopting them. Only
    /// droplets named like this pool's (<hostname_prefix>-<n>) are ever
    /// destroyed; asks first on a terminal (before taking the inventory
    /// lock, then checks under it that the orphans are still those listed),
    /// needs --yes otherwise.
    #[arg(long, requires = "apply")]
    pub prune: bool,

    /// With --prune: destroy the listed orphans without asking (for scripts).
    #[arg(long, requires = "prune")]
    pub yes: bool,

    /// Exit 3 when drift was found (with --apply: found and fixed), 0 when
    /// none, so scripts can tell; failures stay 1 and usage errors 2.
    #[arg(long)]
    pub exit_code: bool,

    /// With --apply: how long after its creation to wait for a droplet
    /// still booting (recorded new by a create that was stopped, or an
    /// orphan to adopt) to become active; it then has ready_timeout to pass
    /// the health check, so one run joins it. Asked questions and waits
    /// never hold the inventory lock.
    #[arg(long, default_value = "10m", value_parser = longer_than_zero)]
    pub timeout: Duration,

    /// With haproxy_socket set: how long to let open sessions finish on the
    /// servers of droplets whose unfinished delete is completed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// How many droplets to create, 1 to 100. More than
    /// confirm_creates_above (default 10) asks first, or needs --yes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,

    /// Create more than confirm_creates_above droplets without asking (for
    /// scripts: without a terminal to ask on, such a run is refused).
    #[arg(long)]
    pub yes: bool,

    /// How long to wait for the droplets to become active, e.g. 90s, 10m.
    #[arg(long, default_value = "10m", value_parser = longer_than_zero)]
    pub timeout: Duration,

    /// Add droplets to HAProxy as soon as they are active, without waiting
    /// for them to pass the health check (health_check_path).
    #[arg(long)]
    pub no_ready_wait: bool,

    /// Destroy droplets that do not pass the health check within
    /// ready_timeout, instead of keeping them (out of HAProxy) for a look.
    #[arg(long, conflicts_with = "no_ready_wait")]
    pub destroy_unready: bool,

    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Line numbers of droplets as `print` shows them.
    #[arg(value_name = "LINE_NUMBER", required_unless_present_any = ["id", "name"])]
    pub lines: Vec<usize>,

    /// Select droplets by DigitalOcean droplet ID.
    #[arg(long, value_name = "ID", num_args = 1.., conflicts_with_all = ["lines", "name"])]
    pub id: Vec<u64>,

    /// Select droplets by name.
    #[arg(long, value_name = "NAME", num_args = 1.., conflicts_with_all = ["lines", "id"])]
    pub name: Vec<String>,

    /// Allow deleting the last droplet that serves, leaving HAProxy without
    /// servers.
    #[arg(long)]
    pub allow_empty: bool,

    /// With haproxy_socket set: how long to let open sessions finish after a
    /// server stops taking new ones, before it is removed anyway.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The number of droplets the pool should have, 0 to 1000. Adding more
    /// than confirm_creates_above (default 10) at once asks first, or needs
    /// --yes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub to: u32,

    /// Add more than confirm_creates_above droplets without asking (for
    /// scripts: without a terminal to ask on, such a run is refused).
    #[arg(long)]
    pub yes: bool,

    /// When shrinking, remove the oldest droplets first instead of the newest.
    #[arg(long)]
    pub oldest: bool,

    /// Show the plan without changing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Allow shrinking away the last droplet that serves, leaving HAProxy
    /// without servers (as delete --allow-empty).
    #[arg(long)]
    pub allow_empty: bool,

    #[command(flatten)]
    pub waits: ScaleWaits,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Droplets replaced per step (default 1).
    #[arg(long, value_name = "N", conflicts_with = "max_surge", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: Option<u32>,

    /// Droplets the pool may have beyond its size during a step; with
    /// --min-healthy below 100 more are replaced per step, old ones
    /// leaving first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_surge: Option<u32>,

    /// Serving droplets kept at all times, in percent of those serving when
    /// the rollout starts (rounded up, at least one), e.g. 100 or 50%.
    #[arg(long, value_name = "PCT", default_value = "100", value_parser = percent)]
    pub min_healthy: u8,

    /// Replace only droplets built from other options than droplet_options
    /// has now, and those whose build is unknown.
    #[arg(long)]
    pub only_stale: bool,

    /// Show what would be replaced, and how, without changing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Stop once this many new droplets failed to join (they are
    /// destroyed; the old droplets they were to replace keep serving).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unready: u32,

    #[command(flatten)]
    pub waits: ScaleWaits,
}

#[derive(Debug, Args)]
pub struct HealArgs {
    /// Make one pass and exit (for cron).
    #[arg(long)]
    pub once: bool,

    /// Show what would be replaced, and why, without changing anything
    /// (implies --once).
    #[arg(long)]
    pub dry_run: bool,

    /// Show the recorded replacements and refusals (the heal events of
    /// doproxy history) instead of healing.
    #[arg(long, conflicts_with_all = ["once", "dry_run"])]
    pub history: bool,

    #[command(flatten)]
    pub waits: ScaleWaits,
}

/// A percentage, 0 to 100, with or without a trailing %.
fn percent(text: &str) -> Result<u8, String> {
    text.trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|pct| *pct <= 100)
        .ok_or_else(|| format!("{text:?} is no percentage from 0 to 100"))
}

#[derive(Debug, Args)]
pub struct AutoscaleArgs {
    /// Make one decision, act on it and exit (for cron).
    #[arg(long)]
    pub once: bool,

    /// Show the decision without acting on it (implies --once).
    #[arg(long)]
    pub dry_run: bool,

    /// Show the recorded decisions instead of deciding.
    #[arg(long, conflicts_with_all = ["once", "dry_run"])]
    pub history: bool,

    /// Serve Prometheus metrics on this address (instead of metrics_listen),
    /// e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub waits: ScaleWaits,
}

/// How long `scale`, `autoscale`, `rollout` and `heal` wait for what they
/// start.
#[derive(Debug, Args)]
pub struct ScaleWaits {
    /// How long to wait for new droplets to become active.
    #[arg(long, default_value = "10m", value_parser = longer_than_zero)]
    pub timeout: Duration,

    /// How long open sessions on a leaving droplet may take to finish
    /// (with haproxy_socket).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Update HAProxy once no change has come for this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub quiet_period: Duration,

    /// Update HAProxy at the latest this long after the first change, even
    /// if changes keep coming.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub max_wait: Duration,

    /// With no news from etcd for this long, re-read the whole inventory and
    /// open a fresh watch: the longest a silently stalled connection can
    /// hide a change.
    #[arg(long, default_value = "10s", value_parser = longer_than_zero)]
    pub resync_interval: Duration,

    /// Serve Prometheus metrics on this address (instead of metrics_listen),
    /// e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only events this recent, e.g. 1h, 2d.
    #[arg(long, value_name = "DURATION", value_parser = longer_than_zero)]
    pub since: Option<Duration>,

    /// Only events of this kind (droplet.created) or family (droplet);
    /// repeat for several.
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Show the recorded reserved IP assignments instead of taking part.
    #[arg(long)]
    pub history: bool,
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Print the inventory in the inventory file's line format.
    ///
    /// Example: doproxy inventory export > inventory.txt
    Export,

    /// Load an inventory file (line format; - for stdin) into the store.
    ///
    /// Example: doproxy --config etcd.yml inventory import inventory.txt
    Import(ImportArgs),

    /// Move this pool's droplets from the etcd prefix pools shared before
    /// each had its own (/doproxy/doproxy/) to the pool's own prefix, in one
    /// transaction. Run it once every proxy of the pool runs this version.
    ///
    /// Example: doproxy inventory migrate
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The etcd prefix to take the pool's droplets from.
    #[arg(long, value_name = "PREFIX", default_value = "/doproxy/doproxy/")]
    pub from: String,

    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to read; - reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Replace a store that is not empty (by default refused).
    #[arg(long)]
    pub replace: bool,

    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Install a config without servers even though the live one has some
    /// (by default refused: bad inventory data must not empty the pool).
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to write into (created if missing).
    #[arg(default_value = ".")]
    pub folder: PathBuf,

    /// Also write the built-in HAProxy template as haproxy.cfg.tera and use
    /// it (haproxy_template_file), to edit. Without it the built-in
    /// template is used, and changes with doproxy's updates.
    #[arg(long)]
    pub template: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// A duration such as 90s or 10m that is not zero: waiting 0s for droplets
/// to boot would destroy every one of them, resyncing every 0s would spin.
fn longer_than_zero(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than 0s, e.g. 10m".to_string()),
        parsed => parsed.map_err(|err| err.to_string()),
    }
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// How long to wait for another doproxy run that holds the inventory lock.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub lock_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Show the HTTPS certificate: domains, issuer, serial, expiry, days
    /// left, the serial HAProxy serves, and when it is renewed.
    ///
    /// Example: doproxy cert status -o json
    Status,

    /// Have the certificate issued by the ACME CA when due (at two thirds
    /// of its lifetime, or when there is none) and install it without a
    /// reload; with tls.certificate_file, install the user's files.
    ///
    /// One proxy asks the CA at a time (it holds the inventory lock); the
    /// certificate goes to the store, where every proxy's watch finds it.
    /// A failed attempt keeps the certificate in use and says why.
    ///
    /// Example: doproxy cert renew --force
    Renew(RenewArgs),
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Ask the CA now, even when the certificate is not due.
    #[arg(long)]
    pub force: bool,

    /// Say whether a certificate would be asked for, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub lock: LockArgs,
}
