//! `reload`: generate, check with HAProxy, install into haproxy_cfg_path and
//! reload HAProxy.

use anyhow::Result;

use super::{Context, Report};
use crate::cli::ReloadArgs;

pub async fn run(ctx: &Context, args: &ReloadArgs) -> Result<Report> {
    let entries = ctx.entries(None).await?;
    let applied = ctx.reload(&entries, args.allow_empty).await?;
    Report::new(Vec::new(), &applied)
}
