//! Exclusive lock files (flock), for what one machine's runs must do one at
//! a time: change the flat-file inventory, rewrite and reload HAProxy's
//! config. The lock goes with the process, so a killed run never leaves it
//! held. Waiting polls with the async runtime's timer, so a wait never stops
//! the runtime's other tasks (the etcd lease keepalive among them).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often a waiting run checks whether the lock is free.
const POLL: Duration = Duration::from_millis(50);

/// Another run held a lock for all of the time a run would wait for it.
/// Typed, so that a loop that merely tries (a renewal another proxy may be
/// doing) can tell it from a failure.
#[derive(Debug, thiserror::Error)]
#[error(
    "another doproxy run ({holder}) still holds {lock} after {}; wait for it to finish or raise --lock-timeout",
    humantime::format_duration(*.waited)
)]
pub struct LockBusy {
    /// Who holds it, as far as known.
    pub holder: String,
    /// Which lock: a file's path, or an etcd lock's name.
    pub lock: String,
    pub waited: Duration,
}

/// Held until dropped.
pub struct LockFile {
    _file: File,
}

impl LockFile {
    /// Takes the lock on `path` (created if missing), waiting up to `timeout`
    /// for another run to finish, and says so on stderr while it waits.
    pub async fn acquire(path: &Path, timeout: Duration) -> Result<LockFile> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            // A link planted in its place must not make root truncate
            // what it points to.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => anyhow::anyhow!(
                    "lock file {} is a symbolic link, which doproxy never writes through; remove it",
                    path.display()
                ),
                _ => anyhow::Error::new(err).context(format!(
                    "cannot open lock file {}; check that its folder is writable",
                    path.display()
                )),
            })?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(err)) => bail!("cannot lock {}: {err}", path.display()),
            }
            if started.elapsed() >= timeout {
                return Err(LockBusy {
                    holder: holder(path),
                    lock: path.display().to_string(),
                    waited: timeout,
                }
                .into());
            }
            if !told {
                tracing::info!(
                    "waiting for another doproxy run ({}) to release {}",
                    holder(path),
                    path.display()
                );
                told = true;
            }
            tokio::time::sleep(POLL).await;
        }
        // Record who holds it, for the message a waiting run prints.
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(LockFile { _file: file })
    }
}

/// "pid 1234", as recorded in the lock file by its holder; only a number
/// is shown, whatever else someone wrote there.
fn holder(path: &Path) -> String {
    match fs::read_to_string(path).map(|pid| pid.trim().parse::<u32>()) {
        Ok(Ok(pid)) => format!("pid {pid}"),
        _ => "pid unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_lock_waits_then_fails_with_the_holder() {
        let path = std::env::temp_dir().join(format!("doproxy-lockfile-{}", std::process::id()));
        let held = LockFile::acquire(&path, Duration::ZERO).await.unwrap();
        let err = LockFile::acquire(&path, Duration::from_millis(120))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        LockFile::acquire(&path, Duration::ZERO).await.unwrap();
        fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn a_waiting_lock_lets_other_tasks_run() {
        let path =
            std::env::temp_dir().join(format!("doproxy-lockfile-tasks-{}", std::process::id()));
        let _held = LockFile::acquire(&path, Duration::ZERO).await.unwrap();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = ticks.clone();
        let ticking = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        assert!(
            LockFile::acquire(&path, Duration::from_millis(300))
                .await
                .is_err()
        );
        ticking.abort();
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 5);
        fs::remove_file(&path).unwrap();
    }
}
