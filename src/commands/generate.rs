//! `generate`: render haproxy_cfg_file from the template and the inventory.

use anyhow::Result;
use serde_json::json;

use super::{Context, Report};

pub async fn run(ctx: &Context) -> Result<Report> {
    let entries = ctx.entries(None).await?;
    let servers = ctx.generate(&entries).await?;
    let file = &ctx.config.haproxy.cfg_file;
    tracing::info!("wrote {} with {servers} servers", file.display());
    Report::new(Vec::new(), json!({ "file": file, "servers": servers }))
}
