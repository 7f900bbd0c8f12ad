//! What a command hands back for printing: the lines for people, the JSON
//! for `-o json`, and the failure when only part of the work succeeded;
//! and how the outcomes of operations several commands run (a create, a
//! delete, a heal pass) read.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::ops::create::Created;
use crate::ops::delete::Deletion;
use crate::ops::heal::Healed;
use crate::shutdown::Interrupted;

/// A command's result: the lines printed for people, the JSON printed with
/// `-o json`, and, when only part of the work succeeded, the error to report
/// after them.
pub struct Report {
    pub text: Vec<String>,
    pub json: serde_json::Value,
    pub failure: Option<anyhow::Error>,
    /// The exit code when nothing failed: 0, or what a flag such as
    /// `reconcile --exit-code` asks for to tell an outcome apart.
    pub exit_code: u8,
}

impl Report {
    pub fn new(text: Vec<String>, json: impl Serialize) -> Result<Report> {
        let json = serde_json::to_value(json).context("cannot encode the result as JSON")?;
        Ok(Report {
            text,
            json,
            failure: None,
            exit_code: 0,
        })
    }

    /// A report whose JSON is built already (no second copy of a large one).
    pub fn from_json(text: Vec<String>, json: serde_json::Value) -> Report {
        Report {
            text,
            json,
            failure: None,
            exit_code: 0,
        }
    }

    /// This report, exiting with `code` unless it failed.
    pub fn exiting_with(mut self, code: u8) -> Report {
        self.exit_code = code;
        self
    }

    /// This report, marked as a partial failure.
    pub fn failed(mut self, failure: anyhow::Error) -> Report {
        self.failure = Some(failure);
        self
    }

    /// This report, marked as a partial failure when there is one.
    pub fn failed_if(self, failure: Option<anyhow::Error>) -> Report {
        match failure {
            Some(failure) => self.failed(failure),
            None => self,
        }
    }

    /// What a long-running command reports when a signal stopped it, as it
    /// should: nothing printed, `{"stopped_by": "SIGTERM"}` in JSON.
    pub fn stopped(stopped: &Interrupted) -> Result<Report> {
        Report::new(
            Vec::new(),
            json!({ "stopped_by": stopped.signal.to_string() }),
        )
    }
}

/// A create, as `create`, `scale` and `autoscale` report it: the original's
/// `Success:` line for each droplet that joined.
pub fn created(created: &Created) -> Result<Report> {
    let text = created
        .ready
        .iter()
        .map(|id| format!("Success: {id} created and added to backend."))
        .collect();
    let report = Report::new(
        text,
        json!({ "created": created.added, "unready": created.unready, "destroyed": created.destroyed, "haproxy": created.applied }),
    )?;
    Ok(report.failed_if(created.failure()))
}

/// A delete, as `delete`, `scale` and `autoscale` report it: the original's
/// `Success:` line for each droplet destroyed.
pub fn deleted(deletion: &Deletion) -> Result<Report> {
    let text = deletion
        .destroyed
        .iter()
        .map(|e| format!("Success: {} deleted and removed from backend.", e.id))
        .collect();
    let report = Report::new(
        text,
        json!({ "deleted": deletion.destroyed, "haproxy": deletion.applied }),
    )?;
    Ok(report.failed_if(deletion.failure()))
}

/// A heal pass, as `heal` and `autoscale` report it: what it replaces (or
/// would) and why, what it waits on, what it replaced.
pub fn healed(healed: &Healed) -> Result<Report> {
    let decision = &healed.decision;
    let would = if healed.dry_run {
        "Would replace"
    } else {
        "Replacing"
    };
    let mut text: Vec<String> = decision
        .replace
        .iter()
        .map(|v| format!("{would} {} ({}): {}.", v.id, v.name, v.why))
        .collect();
    text.extend(
        decision
            .waiting
            .iter()
            .map(|v| format!("Waiting on {} ({}): {}.", v.id, v.name, v.why)),
    );
    text.extend(
        healed
            .replaced
            .iter()
            .map(|r| format!("Replaced {} with {}.", r.old, r.new)),
    );
    if text.is_empty() && decision.outage.is_none() {
        text.push(format!("All {} droplet(s) are healthy.", decision.pool));
    }
    let report = Report::new(
        text,
        json!({ "decision": decision, "replaced": healed.replaced, "dry_run": healed.dry_run }),
    )?;
    Ok(report.failed_if(healed.failure()))
}

/// A heal pass's report on stderr, for the loops of `heal` and `autoscale`.
pub fn log_heal(report: &Report) {
    for line in &report.text {
        tracing::info!("heal: {line}");
    }
    if let Some(failure) = &report.failure {
        tracing::error!("heal: {failure:#}");
    }
}
