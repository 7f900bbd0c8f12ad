//! `watch`: keep this proxy's HAProxy in step with the shared etcd
//! inventory, whichever proxy (or cron job) changed it (`ops::watch`),
//! until a signal stops it. With metrics_listen (or --metrics-listen) it
//! serves Prometheus metrics meanwhile.

use anyhow::Result;

use super::{Context, Report};
use crate::cli::WatchArgs;
use crate::ops::watch::{Timing, follow};

pub async fn run(ctx: &Context, args: &WatchArgs) -> Result<Report> {
    let timing = Timing {
        quiet_period: args.quiet_period,
        max_wait: args.max_wait,
        resync_interval: args.resync_interval,
    };
    let stopped = follow(ctx, &timing, args.metrics_listen).await?;
    tracing::info!("{stopped}; HAProxy keeps the servers it has");
    Report::stopped(&stopped)
}
