//! The audit trail kept with the inventory: every event doproxy records,
//! oldest first. Beside the flat file it is an append-only JSON-lines log
//! (`<inventory>.events`), opened with O_APPEND so runs at once never
//! overwrite each other's lines, and rotated by size keeping one old file
//! (`<inventory>.events.1`); in etcd it is one key per event under
//! `<prefix>events/`, named by time so keys sort as events happened,
//! trimmed to the newest `ETCD_KEPT` after each append. Appending takes no
//! lock: an event is recorded even by a run that holds none (failover).
//! Whoever can write the store can write the trail, so lines that do not
//! read as events are skipped, and counted.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::layout::MAX_OPS;
use crate::etcd::{Client, Op, Put};
use crate::model::Event;

/// The size past which the file log is rotated (~3,000 events of ~300 bytes).
const FILE_MAX_BYTES: u64 = 1024 * 1024;
/// How many events the etcd trail keeps.
pub const ETCD_KEPT: usize = 1000;

/// The trail as read: the events oldest first, and how many entries did
/// not read as events.
#[derive(Debug, Default)]
pub struct Trail {
    pub events: Vec<Event>,
    pub unreadable: usize,
}

impl Trail {
    fn read(&mut self, text: &str) {
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            match serde_json::from_str::<Event>(line) {
                Ok(event) => self.events.push(event),
                Err(_) => self.unreadable += 1,
            }
        }
    }
}

/// `<inventory>.events`.
pub fn file_path(inventory: &Path) -> PathBuf {
    crate::atomic_file::sibling(inventory, "events")
}

fn rotated_path(log: &Path) -> PathBuf {
    crate::atomic_file::sibling(log, "1")
}

/// Appends `events` to the log beside `inventory`, as one write (mode 0640
/// when it is made; a symbolic link in its place is refused), after
/// rotating it once it has grown past FILE_MAX_BYTES.
pub fn file_append(inventory: &Path, events: &[Event]) -> Result<()> {
    let log = file_path(inventory);
    if fs::symlink_metadata(&log).is_ok_and(|meta| meta.len() > FILE_MAX_BYTES) {
        // Two runs may both rotate: the second moves a log of a line or
        // two over the first's old one. Rare, and only old lines are lost.
        fs::rename(&log, rotated_path(&log))
            .with_context(|| format!("cannot rotate the event log {}", log.display()))?;
    }
    let mut text = String::new();
    for event in events {
        text.push_str(&serde_json::to_string(event).context("cannot encode an event")?);
        text.push('\n');
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log)
        .with_context(|| format!("cannot open the event log {}", log.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot append to the event log {}", log.display()))
}

/// The events of the log beside `inventory`: the rotated file's, then the
/// current one's.
pub fn file_read(inventory: &Path) -> Result<Trail> {
    let log = file_path(inventory);
    let mut trail = Trail::default();
    for path in [rotated_path(&log), log] {
        match fs::read(&path) {
            Ok(bytes) => trail.read(&String::from_utf8_lossy(&bytes)),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "cannot read the event log {}; check its permissions",
                        path.display()
                    )
                });
            }
        }
    }
    Ok(trail)
}

/// `<prefix>events/`.
fn etcd_prefix(prefix: &str) -> String {
    format!("{prefix}events/")
}

/// Puts `events` under the pool's prefix in one transaction, then deletes
/// the oldest beyond ETCD_KEPT.
pub async fn etcd_append(client: &Client, prefix: &str, events: &[Event]) -> Result<()> {
    let events_prefix = etcd_prefix(prefix);
    let mut puts = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let millis = event
            .at
            .time()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        // Time first, then the place in this batch, so keys sort as events
        // happened; a random tail keeps events of one millisecond from
        // several proxies apart.
        let key = format!(
            "{events_prefix}{millis:016}-{index:04}-{:08x}",
            fastrand::u32(..)
        );
        puts.push(Op::Put(Put {
            key,
            value: serde_json::to_vec(event).context("cannot encode an event")?,
            lease: None,
        }));
    }
    client.txn(&[], &puts).await?;
    trim(client, &events_prefix).await
}

/// Deletes the oldest events under `events_prefix` beyond ETCD_KEPT.
async fn trim(client: &Client, events_prefix: &str) -> Result<()> {
    let keys = client.keys_prefix(events_prefix).await?;
    if let Some(first_kept) = first_kept(&keys, ETCD_KEPT) {
        client
            .txn(
                &[],
                &[Op::DeleteRange(
                    events_prefix.to_string(),
                    first_kept.clone(),
                )],
            )
            .await?;
    }
    Ok(())
}

/// Copies the events of pool `pool` kept under prefix `from` to prefix
/// `to`, under the same keys, so an inventory moved to its own prefix
/// keeps its trail; the events of other pools stay where they are.
/// Returns how many were copied.
pub async fn etcd_copy(client: &Client, from: &str, to: &str, pool: &str) -> Result<usize> {
    let (source, target) = (etcd_prefix(from), etcd_prefix(to));
    let puts: Vec<Op> = client
        .range_prefix(&source)
        .await?
        .kvs
        .into_iter()
        .filter(|kv| {
            serde_json::from_slice::<Event>(&kv.value).is_ok_and(|event| *event.actor.pool == *pool)
        })
        .filter_map(|kv| {
            let name = kv.key.strip_prefix(&source)?.to_string();
            Some(Op::Put(Put {
                key: format!("{target}{name}"),
                value: kv.value,
                lease: None,
            }))
        })
        .collect();
    for slice in puts.chunks(MAX_OPS) {
        client.txn(&[], slice).await?;
    }
    trim(client, &target).await?;
    Ok(puts.len())
}

/// Of `keys` (in order), the oldest of the newest `kept`, when older ones
/// are to go.
fn first_kept(keys: &[String], kept: usize) -> Option<&String> {
    keys.len()
        .checked_sub(kept)
        .filter(|excess| *excess > 0)
        .and_then(|excess| keys.get(excess))
}

/// The events kept under the pool's prefix, oldest first.
pub async fn etcd_read(client: &Client, prefix: &str) -> Result<Trail> {
    let range = client.range_prefix(&etcd_prefix(prefix)).await?;
    let mut trail = Trail::default();
    for kv in range.kvs {
        match serde_json::from_slice::<Event>(&kv.value) {
            Ok(event) => trail.events.push(event),
            Err(_) => trail.unreadable += 1,
        }
    }
    Ok(trail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, Change, EventTime, Kind};
    use std::os::unix::fs::PermissionsExt;

    fn event(n: u64) -> Event {
        Event {
            at: EventTime::now(),
            change: Change::done(Kind::DropletCreated, vec![n], "done"),
            actor: Actor {
                pool: "doproxy:web".into(),
                proxy: "proxy".into(),
                command: "doproxy create".into(),
                user: "alice".into(),
            },
        }
    }

    #[test]
    fn the_etcd_trail_keeps_the_newest() {
        let keys: Vec<String> = (0..5).map(|n| format!("e/{n}")).collect();
        assert_eq!(first_kept(&keys, 3), Some(&"e/2".to_string()));
        assert_eq!(first_kept(&keys, 5), None);
        assert_eq!(first_kept(&keys, 9), None);
    }

    #[test]
    fn the_file_log_appends_rotates_and_skips_what_is_no_event() {
        let dir = std::env::temp_dir().join(format!("doproxy-events-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let inventory = dir.join("inventory");
        file_append(&inventory, &[event(1), event(2)]).unwrap();
        let log = file_path(&inventory);
        assert_eq!(
            fs::metadata(&log).unwrap().permissions().mode() & 0o777 & !0o022,
            0o640 & !0o022
        );
        fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let trail = file_read(&inventory).unwrap();
        assert_eq!(trail.events.len(), 2);
        assert_eq!(trail.unreadable, 1);

        // Grown past the size, it is rotated: the old file and the new one read in order.
        let big: Vec<Event> = (3..3 + FILE_MAX_BYTES / 150).map(event).collect();
        file_append(&inventory, &big).unwrap();
        file_append(&inventory, &[event(0)]).unwrap();
        assert!(rotated_path(&log).exists());
        let trail = file_read(&inventory).unwrap();
        assert_eq!(trail.events.first().unwrap().change.droplets, vec![1]);
        assert_eq!(trail.events.last().unwrap().change.droplets, vec![0]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
