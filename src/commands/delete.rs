//! `delete`: take droplets out of HAProxy, then destroy them
//! (`ops::delete`, through `ops::retire`), chosen by the line numbers
//! `print` shows, by ID or by name.

use anyhow::Result;

use super::Context;
use super::report::{self, Report};
use crate::cli::DeleteArgs;
use crate::ops::delete::{DeleteOptions, delete};
use crate::scaling::Selector;

pub async fn run(ctx: &Context, args: &DeleteArgs) -> Result<Report> {
    let selector = if !args.id.is_empty() {
        Selector::Ids(args.id.clone())
    } else if !args.name.is_empty() {
        Selector::Names(args.name.clone())
    } else {
        Selector::Lines(args.lines.clone())
    };
    let options = DeleteOptions {
        selector,
        drain_timeout: args.drain_timeout,
        lock_timeout: args.lock.lock_timeout,
        allow_empty: args.allow_empty,
    };
    report::deleted(&delete(ctx, &options).await?)
}
