//! `generate`: render haproxy_cfg_file from the template and the inventory.

use anyhow::Result;
use serde_json::json;

use super::{App, Report};
use crate::haproxy;

pub async fn run(app: &App) -> Result<Report> {
    let entries = app.entries(None).await?;
    let servers =
        haproxy::generate(&app.config.haproxy, app.frontend_bind().await, &entries).await?;
    let file = &app.config.haproxy.cfg_file;
    tracing::info!("wrote {} with {servers} servers", file.display());
    Report::new(Vec::new(), json!({ "file": file, "servers": servers }))
}
