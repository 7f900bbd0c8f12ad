//! `create`: make droplets, record them at once, wait until they are active
//! and ready, then put them in HAProxy with one reload (`ops::create`).
//! More droplets at once than confirm_creates_above need a yes, asked here
//! before anything starts.

use anyhow::Result;

use super::report::{self, Report};
use super::{Context, agreed_count};
use crate::cli::CreateArgs;
use crate::ops::create::{Count, CreateOptions, create};

pub async fn run(ctx: &Context, args: &CreateArgs) -> Result<Report> {
    let count = args.count as usize;
    let command = format!("create --count {count}");
    let options = CreateOptions {
        count: Count::More(count),
        timeout: args.timeout,
        lock_timeout: args.lock.lock_timeout,
        ready_wait: !args.no_ready_wait,
        destroy_unready: args.destroy_unready,
        at_most: agreed_count(ctx, count, args.yes, &command).await?,
    };
    report::created(&create(ctx, &options).await?)
}
