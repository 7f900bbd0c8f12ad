//! `history`: the audit trail (`ops::events`), oldest first, narrowed by
//! `--since` and `--kind`; `heal --history` is the same, of heal's kinds.

use anyhow::{Result, bail};

use super::{Context, Report};
use crate::cli::HistoryArgs;
use crate::model::Kind;
use crate::ops::events::{Filter, history};

pub async fn run(ctx: &Context, args: &HistoryArgs) -> Result<Report> {
    for kind in &args.kind {
        if !Kind::is_filter(kind) {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            bail!(
                "--kind {kind:?} names no event kind; use one of {} or its family (the part before the dot)",
                known.join(", ")
            );
        }
    }
    let filter = Filter {
        since: args.since,
        kinds: args.kind.clone(),
    };
    show(ctx, &filter).await
}

/// The events `filter` keeps, one line each (or JSON, a list).
pub async fn show(ctx: &Context, filter: &Filter) -> Result<Report> {
    let trail = history(ctx, filter).await?;
    if trail.unreadable > 0 {
        tracing::warn!(
            "{} entr(ies) of the audit trail in {} are no events doproxy wrote, and were skipped",
            trail.unreadable,
            ctx.store.describe()
        );
    }
    let text = if trail.events.is_empty() {
        vec!["No event recorded yet.".to_string()]
    } else {
        trail.events.iter().map(|event| event.line()).collect()
    };
    Report::new(text, &trail.events)
}
