//! The command line: every command, flag and help text users see.
//!
//! Global flags (`--config`, `-o`, `-q`, `-v`) are accepted before or after the
//! command name, so `doproxy -o json print` and `doproxy print -o json` agree.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::parse_duration;

/// Scale a web application tier on DigitalOcean droplets behind HAProxy.
///
/// doproxy keeps an inventory of the droplets it created, renders the HAProxy
/// configuration from it, checks and installs that configuration, and reloads
/// HAProxy. It is a drop-in successor of the Ruby DOProxy script.
#[derive(Debug, Parser)]
// The version line also names the commit and build date (build.rs).
#[command(
    name = "doproxy",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DOPROXY_BUILD"), ")"),
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Path of doproxy.yml (default: ./doproxy.yml). Relative paths inside it
    /// resolve against the folder that holds it.
    #[arg(long, global = true, env = "DOPROXY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Output format of results on stdout.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Print only results and errors (not with --verbose).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail about what doproxy does (every API request, command
    /// run and wait).
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The original DOProxy lines, for people.
    Text,
    /// Machine-readable JSON, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the droplets in the inventory, one per line, as DOProxy did.
    ///
    /// Reads only the inventory: no API call unless --refresh.
    ///
    /// Example: doproxy print --refresh
    Print(PrintArgs),

    /// Create droplets, wait until they are active, add them to HAProxy.
    ///
    /// Nothing is created that HAProxy could not serve: the config with the
    /// new droplets is rendered and checked with haproxy_check_command first,
    /// and with haproxy_socket HAProxy must answer on it.
    ///
    /// Example: doproxy create --count 3
    Create(CreateArgs),

    /// Remove droplets from HAProxy, then destroy them.
    ///
    /// Targets are the line numbers `print` shows, or --id / --name. Every
    /// target is checked before anything changes, and before any server is
    /// drained the API must accept the token and show each droplet as the
    /// pool's (carrying its tag, or from before pools had tags and named
    /// <hostname_prefix>-<n>).
    ///
    /// Example: doproxy delete 0 2
    Delete(DeleteArgs),

    /// Create or remove droplets until the pool has exactly N.
    ///
    /// Growing works like create (multi-create, readiness, one HAProxy
    /// update); shrinking like delete (drain, one HAProxy update, destroy),
    /// taking droplets
    /// that serve nothing first, then the newest (or --oldest).
    ///
    /// Example: doproxy scale --to 10 --dry-run
    Scale(ScaleArgs),

    /// Replace droplets with new ones built from droplet_options as it is now.
    ///
    /// Step by step: new droplets first, each joining HAProxy once it passes
    /// the health check, then the old ones are drained and destroyed, never
    /// letting serving droplets drop below --min-healthy. A stopped rollout
    /// continues where it stopped on the next run. New droplets that fail
    /// the health check are destroyed and the old ones keep serving.
    ///
    /// Example: doproxy rollout --only-stale --batch 2
    Rollout(RolloutArgs),

    /// Replace droplets that died: DOWN in HAProxy past a grace period, or
    /// off or gone at DigitalOcean.
    ///
    /// New droplet first, then the old one is drained and destroyed. Uses
    /// the heal section of doproxy.yml (defaults without one). Replaces at
    /// most heal.max_share_per_hour of the pool per hour, and nothing DOWN
    /// when most of the pool is DOWN at once (an outage, reported). Without
    /// --once it runs a pass every heal.interval until stopped.
    ///
    /// Example: doproxy heal --once --dry-run
    Heal(HealArgs),

    /// Compare the inventory with DigitalOcean and HAProxy and report the
    /// differences.
    ///
    /// Finds entries whose droplet is gone, droplets carrying the pool's tag
    /// that the inventory lacks (orphans; those not named like the pool's
    /// are set apart as foreign), droplets that booted since they were
    /// recorded, changed status or addresses, unfinished deletes, untagged
    /// droplets, and a HAProxy that does not run what the inventory gives.
    /// Changes nothing without --apply, which fixes each (waiting for
    /// droplets still booting to pass the health check and join).
    ///
    /// Example: doproxy reconcile --apply
    Reconcile(ReconcileArgs),

    /// Scale the pool on load: HAProxy sessions, request rate, queueing, CPU.
    ///
    /// Uses the autoscale section of doproxy.yml. Without --once it decides
    /// every autoscale.interval until stopped (as a systemd service:
    /// contrib/systemd); with --once it decides once (for cron). Every
    /// decision is recorded; --history shows them.
    ///
    /// Example: doproxy autoscale --once --dry-run
    Autoscale(AutoscaleArgs),

    /// Follow the shared etcd inventory and keep this proxy's HAProxy in step.
    ///
    /// Runs until stopped (as a systemd service: contrib/systemd). Changes
    /// are batched: HAProxy is updated once things have been quiet for
    /// --quiet-period, or at the latest --max-wait after the first change. After
    /// losing etcd it resumes where it left off; it never empties HAProxy
    /// because etcd could not be read or was rebuilt empty. After
    /// --resync-interval without news it re-reads the whole inventory and
    /// watches afresh, so a stalled connection delays a change by at most
    /// that long; a failed HAProxy update is retried until it works.
    ///
    /// Example: doproxy watch --quiet-period 2s
    Watch(WatchArgs),

    /// Hold the pool's reserved IP on the leading proxy, moving it on failure.
    ///
    /// The proxies elect a leader through an etcd lease; the leader assigns
    /// reserved_ip to its own droplet and checks it every
    /// failover_recheck_interval. A proxy claims leadership only while its
    /// own HAProxy answers, and a leader whose HAProxy stops answering
    /// resigns. Runs until stopped (as a systemd service: contrib/systemd);
    /// on SIGTERM a leader resigns so another takes over at once. --history
    /// shows the recorded assignments.
    ///
    /// Example: doproxy failover --history
    Failover(FailoverArgs),

    /// Copy the inventory out of or into the configured store (file or
    /// etcd), or move it to the pool's own etcd prefix.
    ///
    /// Example: doproxy inventory export > inventory.txt
    #[command(subcommand)]
    Inventory(InventoryCommand),

    /// Render the HAProxy configuration into haproxy_cfg_file.
    ///
    /// Example: doproxy generate
    Generate,

    /// Render, check with HAProxy, install into haproxy_cfg_path and reload.
    ///
    /// Example: doproxy reload
    Reload(ReloadArgs),

    /// Check the setup: config, token, SSH keys, slugs, user data, template,
    /// HAProxy, admin socket, file permissions, the etcd prefix, the
    /// reserved IP. One line per check.
    ///
    /// Example: doproxy doctor
    Doctor,

    /// Write a commented doproxy.yml and the tutorial's user data into a
    /// folder.
    ///
    /// Refuses to overwrite. The token is left to $DIGITALOCEAN_ACCESS_TOKEN;
    /// ssh_key_ids holds a placeholder (doctor flags it until replaced);
    /// haproxy_socket is Debian's /run/haproxy/admin.sock. With --template,
    /// also the HAProxy template to edit.
    ///
    /// Example: doproxy init /etc/doproxy
    Init(InitArgs),

    /// Print a shell completion script.
    ///
    /// Example: doproxy completions bash > /etc/bash_completion.d/doproxy
    Completions(CompletionsArgs),

    /// Print the manual page (roff): one page, a subsection per command.
    ///
    /// Example: doproxy man > /usr/local/share/man/man1/doproxy.1
    Man,
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli =
            Cli::try_parse_from(["doproxy", "print", "-o", "json", "--config", "x.yml"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.config, Some(PathBuf::from("x.yml")));
    }

    #[test]
    fn command_flags_do_not_clash_with_global_ones() {
        let cli = Cli::try_parse_from(["doproxy", "watch", "--quiet-period", "2s", "-q"]).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.quiet_period, Duration::from_secs(2));
        assert!(cli.global.quiet);
    }

    #[test]
    fn a_zero_timeout_is_a_usage_error() {
        for args in [
            &["doproxy", "create", "--timeout", "0s"][..],
            &["doproxy", "scale", "--to", "2", "--timeout", "0ms"],
            &["doproxy", "autoscale", "--once", "--timeout", "0s"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains("longer than 0s"), "{err}");
        }
        assert!(Cli::try_parse_from(["doproxy", "create", "--timeout", "1s"]).is_ok());
    }

    #[test]
    fn absurd_durations_are_usage_errors() {
        for args in [
            &[
                "doproxy",
                "delete",
                "0",
                "--lock-timeout",
                "18446744073709551615s",
            ][..],
            &["doproxy", "watch", "--max-wait", "11y"],
            &["doproxy", "create", "--timeout", "999999999999h"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains("10 years"), "{err}");
        }
        assert!(Cli::try_parse_from(["doproxy", "watch", "--max-wait", "9y"]).is_ok());
    }

    #[test]
    fn watch_resyncs_every_ten_seconds_unless_told_and_never_every_zero() {
        let cli = Cli::try_parse_from(["doproxy", "watch"]).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.resync_interval, Duration::from_secs(10));
        let err = Cli::try_parse_from(["doproxy", "watch", "--resync-interval", "0s"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("longer than 0s"), "{err}");
    }

    #[test]
    fn rollout_takes_a_batch_or_a_surge_and_a_percentage() {
        let cli = Cli::try_parse_from(["doproxy", "rollout", "--min-healthy", "50%"]).unwrap();
        let Command::Rollout(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.min_healthy, args.batch, args.max_unready),
            (50, None, 1)
        );
        for bad in [
            &["doproxy", "rollout", "--batch", "2", "--max-surge", "1"][..],
            &["doproxy", "rollout", "--min-healthy", "101"],
            &["doproxy", "rollout", "--batch", "0"],
        ] {
            assert_eq!(
                Cli::try_parse_from(bad).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn delete_takes_lines_or_ids_or_names() {
        let cli = Cli::try_parse_from(["doproxy", "delete", "0", "2"]).unwrap();
        let Command::Delete(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.lines, vec![0, 2]);
        assert!(Cli::try_parse_from(["doproxy", "delete"]).is_err());
        assert!(Cli::try_parse_from(["doproxy", "delete", "x"]).is_err());
        assert!(Cli::try_parse_from(["doproxy", "delete", "1", "--id", "5"]).is_err());
        let cli = Cli::try_parse_from(["doproxy", "delete", "--name", "a", "b"]).unwrap();
        let Command::Delete(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.name, vec!["a", "b"]);
    }
}
