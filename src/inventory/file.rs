//! The flat-file inventory: read whole, replaced atomically, and guarded by a
//! lock file beside it so that concurrent runs (two cron jobs) take turns.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::entry::{self, Entry};
use crate::atomic_file;

/// How often a waiting run checks whether the lock is free.
const LOCK_POLL: Duration = Duration::from_millis(50);

pub struct FileInventory {
    path: PathBuf,
}

/// Held while a command changes state; dropping it releases the lock.
pub struct FileLock {
    _file: File,
}

impl FileInventory {
    pub fn new(path: &Path) -> FileInventory {
        FileInventory {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All entries. A missing file is an empty inventory (the original
    /// shipped an empty file; a fresh setup may have none).
    pub fn load(&self) -> Result<Vec<Entry>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => bail!(
                "cannot read inventory file {}: {err}; check its permissions",
                self.path.display()
            ),
        };
        entry::parse(&text).map_err(|err| {
            anyhow::anyhow!(
                "inventory file {} is corrupt at {err}; fix or remove that line, then run doproxy reconcile",
                self.path.display()
            )
        })
    }

    pub fn save(&self, entries: &[Entry]) -> Result<()> {
        atomic_file::write(&self.path, entry::render(entries).as_bytes())
    }

    /// Takes the exclusive lock, waiting up to `timeout` for another run to
    /// finish, and says so on stderr while it waits.
    pub fn lock(&self, timeout: Duration) -> Result<FileLock> {
        let lock_path = self.lock_path();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .with_context(|| {
                format!(
                    "cannot open lock file {}; check that its folder is writable",
                    lock_path.display()
                )
            })?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(err)) => {
                    bail!("cannot lock {}: {err}", lock_path.display())
                }
            }
            if started.elapsed() >= timeout {
                bail!(
                    "another doproxy run ({}) still holds {} after {}; wait for it to finish or raise --lock-timeout",
                    holder(&lock_path),
                    lock_path.display(),
                    humantime::format_duration(timeout)
                );
            }
            if !told {
                tracing::info!(
                    "waiting for another doproxy run ({}) to release {}",
                    holder(&lock_path),
                    lock_path.display()
                );
                told = true;
            }
            std::thread::sleep(LOCK_POLL);
        }
        // Record who holds it, for the message a waiting run prints.
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(FileLock { _file: file })
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        self.path.with_file_name(name)
    }
}

/// "pid 1234", as recorded in the lock file by its holder.
fn holder(lock_path: &Path) -> String {
    match fs::read_to_string(lock_path) {
        Ok(pid) if !pid.trim().is_empty() => format!("pid {}", pid.trim()),
        _ => "pid unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Status;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("doproxy-inv-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_file_is_empty_and_saves_round_trip() {
        let dir = temp_dir("roundtrip");
        let inventory = FileInventory::new(&dir.join("inventory"));
        assert!(inventory.load().unwrap().is_empty());
        let entry = Entry {
            id: 9,
            name: "web-0".into(),
            private_ip: None,
            public_ip: None,
            status: Status::New,
            created_at: None,
        };
        inventory.save(std::slice::from_ref(&entry)).unwrap();
        assert_eq!(inventory.load().unwrap(), vec![entry]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_lock_waits_then_fails_with_the_holder() {
        let dir = temp_dir("lock");
        let inventory = FileInventory::new(&dir.join("inventory"));
        let held = inventory.lock(Duration::ZERO).unwrap();
        let err = inventory
            .lock(Duration::from_millis(120))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        inventory.lock(Duration::ZERO).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
