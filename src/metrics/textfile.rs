//! The node-exporter textfile one-shot commands leave their metrics in:
//! read back, added to and replaced whole, so cron jobs count up like a
//! service does.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{FAMILIES, Kind, Samples, Settings, encode, snapshot};
use crate::atomic_file;
use crate::lockfile::LockFile;

/// The samples of a textfile this module wrote earlier; lines it cannot
/// read (another version's metrics) are left out.
pub(super) fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.find('{') {
            Some(open) => series.split_at(open),
            None => (series, ""),
        };
        if let Some(family) = FAMILIES.iter().find(|f| f.name == name) {
            samples
                .entry(family.name)
                .or_default()
                .insert(labels.to_string(), value);
        }
    }
    samples
}

/// This run's samples on top of an earlier run's: counters add up, and a
/// gauge this run set replaces the earlier one with all its labels (a
/// status the pool no longer has is not left at its old count).
pub(super) fn merge(earlier: Samples, now: &Samples) -> Samples {
    let mut merged = earlier;
    for (name, values) in now {
        let family = FAMILIES.iter().find(|f| f.name == *name).expect("known");
        let into = merged.entry(name).or_default();
        if family.kind == Kind::Gauge {
            *into = values.clone();
            continue;
        }
        for (labels, value) in values {
            *into.entry(labels.clone()).or_insert(0.0) += value;
        }
    }
    merged
}

/// Leaves this run's metrics in metrics_textfile, if set, added to what
/// earlier runs left there. A textfile that cannot be written costs only a
/// warning: the command's own outcome matters more.
pub async fn leave_textfile(settings: &Settings) {
    let Some(path) = &settings.textfile else {
        return;
    };
    if let Err(err) = write_textfile(path).await {
        tracing::warn!("{err:#}; this run's metrics are not in the textfile");
    }
}

async fn write_textfile(path: &Path) -> Result<()> {
    // Runs finishing together take turns, so no run's counts are lost.
    let lock = atomic_file::sibling(path, "lock");
    let _turn = LockFile::acquire(&lock, Duration::from_secs(10)).await?;
    let earlier = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Samples::new(),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read metrics_textfile {}", path.display()));
        }
    };
    let merged = merge(earlier, &snapshot());
    // node-exporter reads it as its own user.
    atomic_file::write_for(
        path,
        encode(&merged).as_bytes(),
        atomic_file::Readers::Everyone,
    )
    .context("cannot write metrics_textfile")
}
