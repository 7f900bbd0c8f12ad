//! `inventory export` / `inventory import`: move the inventory between the
//! flat file and etcd (or back up either) in the file's line format, which
//! keeps every field. `inventory migrate`: move a pool's droplets out of the
//! etcd prefix pools shared before each had its own. See `ops::inventory`.

use std::io::Read;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::{Context, Report};
use crate::cli::{ImportArgs, InventoryCommand, MigrateArgs};
use crate::ops::inventory::{export, import, migrate};

pub async fn run(ctx: &Context, command: &InventoryCommand) -> Result<Report> {
    match command {
        InventoryCommand::Export => {
            let (entries, text) = export(ctx).await?;
            Report::new(text.lines().map(str::to_string).collect(), &entries)
        }
        InventoryCommand::Import(args) => import_file(ctx, args).await,
        InventoryCommand::Migrate(args) => migrate_prefix(ctx, args).await,
    }
}

async fn migrate_prefix(ctx: &Context, args: &MigrateArgs) -> Result<Report> {
    let migrated = migrate(ctx, &args.from, args.lock.lock_timeout).await?;
    Report::new(
        vec![format!(
            "Moved {} droplet(s) of pool {} from {} to {}.",
            migrated.moved,
            ctx.config.pool_tag(),
            args.from,
            migrated.to
        )],
        json!({ "moved": migrated.moved, "from": args.from, "to": migrated.to, "left": migrated.left }),
    )
}

/// Reads the file the arguments name (`-`: stdin) and imports it.
async fn import_file(ctx: &Context, args: &ImportArgs) -> Result<Report> {
    let source = args.file.display().to_string();
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the inventory from stdin")?;
        text
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {source}; check the path"))?
    };
    let imported = import(ctx, &text, &source, args.replace, args.lock.lock_timeout).await?;
    Report::new(
        Vec::new(),
        json!({ "imported": imported, "store": ctx.store.describe() }),
    )
}
