//! `doctor`: check a setup before it is needed, one line per check, each
//! saying what to do when it fails (`ops::doctor`). Changes nothing.

use anyhow::{Result, anyhow};

use super::{Context, Report};
use crate::ops::doctor::{self, Check};

/// A config that did not load: doctor's first and only line.
pub fn config_failed(err: &anyhow::Error) -> Report {
    let check = doctor::config_failed(err);
    let report = Report::new(vec![check.line()], [&check]).expect("a check encodes as JSON");
    report.failed(anyhow!(
        "the config file cannot be used; fix it and run doproxy doctor again"
    ))
}

pub async fn run(ctx: &Context) -> Result<Report> {
    let checks = doctor::checks(ctx).await;
    let text = checks.iter().map(Check::line).collect();
    let failures = checks.iter().filter(|c| c.is_failure()).count();
    let report = Report::new(text, &checks)?;
    if failures == 0 {
        return Ok(report);
    }
    Ok(report.failed(anyhow!(
        "{failures} check(s) failed; fix what the ✗ lines say and run doproxy doctor again"
    )))
}
