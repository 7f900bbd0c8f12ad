//! The command line: every command, flag and help text users see.
//!
//! Global flags (`--config`, `-o`, `-q`, `-v`) are accepted before or after the
//! command name, so `doproxy -o json print` and `doproxy print -o json` agree.
//!
//! `mod.rs` holds the global flags and the list of commands; `args.rs` each
//! command's own arguments, as the commands take them.

mod args;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use args::*;

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

    /// Show the audit trail: every change doproxy made or saw, oldest first.
    ///
    /// Droplets created, joined, drained and destroyed, scale decisions,
    /// rollout steps, heal replacements and refusals, failover elections
    /// and reserved IP moves, reconcile fixes and failed commands, each
    /// with its time, severity, pool, proxy, command line and user. Kept
    /// with the inventory (docs/events.md).
    ///
    /// Example: doproxy history --since 1h --kind heal
    History(HistoryArgs),

    /// Copy the inventory out of or into the configured store (file or
    /// etcd), or move it to the pool's own etcd prefix.
    ///
    /// Example: doproxy inventory export > inventory.txt
    #[command(subcommand)]
    Inventory(InventoryCommand),

    /// HTTPS certificates: show the one in use, or renew it (tls section).
    ///
    /// Example: doproxy cert status
    #[command(subcommand)]
    Cert(CertCommand),

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
