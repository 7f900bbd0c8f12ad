//! `inventory export` / `inventory import`: move the inventory between the
//! flat file and etcd (or back up either) in the file's line format, which
//! keeps every field. `inventory migrate`: move a pool's droplets out of the
//! etcd prefix pools shared before each had its own.

use std::io::Read;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{App, Report};
use crate::cli::{ImportArgs, InventoryCommand, MigrateArgs};
use crate::inventory::{Comments, Store, parse, render};

pub async fn run(app: &App, command: &InventoryCommand) -> Result<Report> {
    match command {
        InventoryCommand::Export => {
            let entries = app.entries(None).await?;
            let text = render(&entries, &Comments::default())
                .lines()
                .map(str::to_string)
                .collect();
            Report::new(text, &entries)
        }
        InventoryCommand::Import(args) => import(app, args).await,
        InventoryCommand::Migrate(args) => migrate(app, args).await,
    }
}

async fn migrate(app: &App, args: &MigrateArgs) -> Result<Report> {
    let Store::Etcd(etcd) = &app.store else {
        bail!(
            "migrate moves an etcd inventory between prefixes; {} keeps its inventory in a file",
            app.config.path.display()
        );
    };
    let (moved, left) = etcd
        .move_from(&args.from, args.lock.lock_timeout, &app.shutdown)
        .await?;
    let to = etcd.prefix();
    tracing::info!("{left} droplet(s) of other pools stay under {}", args.from);
    Report::new(
        vec![format!(
            "Moved {moved} droplet(s) of pool {} from {} to {to}.",
            app.config.pool_tag(),
            args.from
        )],
        json!({ "moved": moved, "from": args.from, "to": to, "left": left }),
    )
}

async fn import(app: &App, args: &ImportArgs) -> Result<Report> {
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
    let entries = parse(&text).map_err(|err| {
        anyhow::anyhow!("{source} is not an inventory: {err}; fix that line and retry")
    })?;
    let lock = app.lock(args.lock.lock_timeout).await?;
    let present = app.store.load().await?;
    if !present.is_empty() && !args.replace {
        bail!(
            "{} already holds {} droplet(s); add --replace to overwrite it with {source}",
            app.store.describe(),
            present.len()
        );
    }
    app.store.save(&entries, &lock).await?;
    lock.release().await;
    tracing::info!(
        "imported {} droplet(s) into {}",
        entries.len(),
        app.store.describe()
    );
    Report::new(
        Vec::new(),
        json!({ "imported": entries.len(), "store": app.store.describe() }),
    )
}
