//! `scale --to N`: grow or shrink the pool to N droplets, through the same
//! create and delete operations (readiness, drain, one reload) as those
//! commands.
//!
//! The plan read here only shows the way (and answers --dry-run): create and
//! delete work out how many droplets to add or which to remove again under
//! the inventory lock, from the pool as it is then, droplets still booting
//! included. So two `scale --to 4` started together make a pool of 4, not 6.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::json;

use super::report::{self, Report};
use super::{Context, agreed_count};
use crate::cli::ScaleArgs;
use crate::model::Entry;
use crate::ops::create::{Count, CreateOptions, create};
use crate::ops::delete::{DeleteOptions, delete};
use crate::scaling::{Pick, Plan, Selector, plan};

pub async fn run(ctx: &Context, args: &ScaleArgs) -> Result<Report> {
    let entries = ctx.entries(None).await?;
    let pick = if args.oldest {
        Pick::Oldest
    } else {
        Pick::Newest
    };
    let target = args.to as usize;
    let plan = plan(&entries, target, pick);
    if args.dry_run {
        let text = match &plan {
            Plan::Stay { size } => format!("The pool has {size} droplets already; nothing to do."),
            Plan::Add { count } => format!("Would create {count} droplet(s) to reach {target}."),
            Plan::Remove { ids } => {
                let by_id: HashMap<u64, &Entry> = entries.iter().map(|e| (e.id, e)).collect();
                let names: Vec<String> = ids
                    .iter()
                    .filter_map(|id| by_id.get(id))
                    .map(|e| format!("{} ({})", e.id, e.name))
                    .collect();
                format!(
                    "Would delete {} droplet(s) to reach {target}: {}.",
                    ids.len(),
                    names.join(", ")
                )
            }
        };
        return Report::new(vec![text], json!({ "dry_run": true, "plan": plan }));
    }
    match plan {
        Plan::Stay { size } => {
            tracing::info!("the pool has {size} droplets already");
            Report::new(Vec::new(), json!({ "plan": plan }))
        }
        Plan::Add { count } => {
            let command = format!("scale --to {target}");
            let options = CreateOptions {
                count: Count::UpTo(target),
                timeout: args.waits.timeout,
                lock_timeout: args.waits.lock.lock_timeout,
                ready_wait: true,
                destroy_unready: false,
                at_most: agreed_count(ctx, count, args.yes, &command).await?,
            };
            report::created(&create(ctx, &options).await?)
        }
        Plan::Remove { .. } => {
            let options = DeleteOptions {
                selector: Selector::Surplus { keep: target, pick },
                drain_timeout: args.waits.drain_timeout,
                lock_timeout: args.waits.lock.lock_timeout,
                allow_empty: args.allow_empty,
            };
            report::deleted(&delete(ctx, &options).await?)
        }
    }
}
