//! `heal`: replace droplets that died after joining the pool
//! (`ops::heal`): one pass with `--once` (or `--dry-run`, which changes
//! nothing), else a pass every heal.interval until a signal stops it;
//! `--history` shows heal's events from the audit trail.

use anyhow::Result;

use super::report::{self, Report};
use super::{Context, Failing, waits};
use crate::cli::HealArgs;
use crate::ops::events::Filter;
use crate::ops::heal::pass;

pub async fn run(ctx: &Context, args: &HealArgs) -> Result<Report> {
    if args.history {
        let filter = Filter {
            since: None,
            kinds: vec!["heal".to_string()],
        };
        return super::history::show(ctx, &filter).await;
    }
    let policy = ctx.config.heal.clone().unwrap_or_default();
    let waits = waits(&args.waits);
    if args.once || args.dry_run {
        return report::healed(&pass(ctx, &policy, &waits, args.dry_run).await?);
    }
    tracing::info!(
        "healing every {}",
        humantime::format_duration(policy.interval)
    );
    let mut failing = Failing::default();
    // With a tls section the certificate is kept alongside, as watch and
    // failover do: with the file inventory (no watch), this service is what
    // renews it.
    ctx.keeping_certificate(async {
        loop {
            let started = tokio::time::Instant::now();
            match pass(ctx, &policy, &waits, false).await {
                Ok(healed) => {
                    report::log_heal(&report::healed(&healed)?);
                    failing.step(ctx, Ok(())).await;
                }
                // A pass a signal cut short says what it left; that ends the service.
                Err(err) if ctx.shutdown.check().is_err() => return Err(err),
                Err(err) => {
                    tracing::error!("heal pass failed: {err:#}");
                    failing.step(ctx, Err(&err)).await;
                }
            }
            tokio::select! {
                stopped = ctx.shutdown.signalled() => {
                    tracing::info!("{stopped}; no heal pass is under way");
                    return Report::stopped(&stopped);
                }
                () = tokio::time::sleep(policy.interval.saturating_sub(started.elapsed())) => {}
            }
        }
    })
    .await
}
