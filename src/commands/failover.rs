//! `failover`: take part in the election of the proxy that holds the
//! reserved IP, and while leading keep it on this droplet, until a signal
//! stops it (`ops::failover`); `--history` shows the recorded assignments.

use anyhow::Result;

use super::{Context, Report};
use crate::cli::FailoverArgs;
use crate::ops::failover::{history, take_part};
use crate::scaling::failover::Assignment;

pub async fn run(ctx: &Context, args: &FailoverArgs) -> Result<Report> {
    if args.history {
        let history = history(ctx).await?;
        let text = if history.is_empty() {
            vec!["No reserved IP assignment recorded yet.".to_string()]
        } else {
            history.iter().map(Assignment::line).collect()
        };
        return Report::new(text, history);
    }
    let stopped = take_part(ctx).await?;
    Report::stopped(&stopped)
}
