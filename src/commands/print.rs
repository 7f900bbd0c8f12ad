//! `print`: the inventory, one line per droplet, exactly as DOProxy printed it.

use anyhow::Result;

use super::{App, LOCK_TIMEOUT, Report};
use crate::cli::PrintArgs;
use crate::inventory::Entry;

const EMPTY: &str = "The inventory file is empty. Use the create command.";

pub async fn run(app: &App, args: &PrintArgs) -> Result<Report> {
    let entries = if args.refresh {
        refresh(app).await?
    } else {
        app.entries(None).await?
    };
    let text = if entries.is_empty() {
        vec![EMPTY.to_string()]
    } else {
        entries
            .iter()
            .enumerate()
            .map(|(line, entry)| format_line(line, entry))
            .collect()
    };
    Report::new(text, &entries)
}

/// The inventory with status and addresses brought up to date from one list
/// of the pool's droplets, saved.
async fn refresh(app: &App) -> Result<Vec<Entry>> {
    let api = app.api()?;
    let lock = app.store.lock(LOCK_TIMEOUT).await?;
    let mut entries = app.entries(Some(&lock)).await?;
    let listed = api.list_droplets(app.config.pool_tag()).await?;
    let mut missing = 0;
    for entry in entries.iter_mut() {
        match listed.iter().find(|d| d.id == entry.id) {
            Some(droplet) => {
                entry.update_from(droplet);
            }
            None => missing += 1,
        }
    }
    app.store.save(&entries, &lock).await?;
    if missing > 0 {
        tracing::warn!(
            "{missing} droplet(s) of the inventory are not among the pool's tagged droplets; run doproxy reconcile"
        );
    }
    Ok(entries)
}

/// `0) auto-nginx-0  (pvt ip: 192.0.2.175, status: active, id: 4202645)`,
/// two spaces after the name, byte for byte the original's.
fn format_line(line: usize, entry: &Entry) -> String {
    let private_ip = entry
        .private_ip
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    format!(
        "{line}) {}  (pvt ip: {private_ip}, status: {}, id: {})",
        entry.name, entry.status, entry.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Status;

    #[test]
    fn line_matches_the_original() {
        let entry = Entry {
            id: 4202645,
            name: "auto-nginx-0".into(),
            private_ip: Some("192.0.2.175".parse().unwrap()),
            public_ip: None,
            status: Status::Active,
            created_at: None,
        };
        assert_eq!(
            format_line(0, &entry),
            "0) auto-nginx-0  (pvt ip: 192.0.2.175, status: active, id: 4202645)"
        );
    }
}
