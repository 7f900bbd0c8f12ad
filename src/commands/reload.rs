//! `reload`: generate, check with HAProxy, install into haproxy_cfg_path and
//! reload HAProxy.

use anyhow::Result;

use super::{App, Report};
use crate::cli::ReloadArgs;
use crate::haproxy::Reload;

pub async fn run(app: &App, args: &ReloadArgs) -> Result<Report> {
    let entries = app.entries(None).await?;
    let applied = crate::ops::apply::apply(
        &app.config,
        app.frontend_bind().await,
        &entries,
        Reload::Always,
        args.allow_empty,
    )
    .await?;
    Report::new(Vec::new(), &applied)
}
