//! `reload`: generate, check with HAProxy, install into haproxy_cfg_path and
//! reload HAProxy.

use anyhow::Result;

use super::{App, Report};
use crate::haproxy::{self, Reload};

pub async fn run(app: &App) -> Result<Report> {
    let entries = app.entries(None).await?;
    let applied = haproxy::apply(&app.config, &entries, Reload::Always).await?;
    Report::new(Vec::new(), &applied)
}
