//! The flat-file inventory: read whole, replaced atomically, and guarded by a
//! lock file beside it so that concurrent runs (two cron jobs) take turns.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use super::format::{self, Comments};
use crate::atomic_file;
use crate::lockfile::LockFile;
use crate::model::Entry;

pub struct FileInventory {
    path: PathBuf,
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
        let Some(text) = self.read()? else {
            return Ok(Vec::new());
        };
        format::parse(&text).map_err(|err| {
            anyhow::anyhow!(
                "inventory file {} is corrupt at {err}; fix or remove that line, then run doproxy reconcile",
                self.path.display()
            )
        })
    }

    /// The line that lists droplet `id`, if one does.
    pub fn line_of(&self, id: u64) -> Result<Option<usize>> {
        Ok(self.read()?.and_then(|text| format::line_of(&text, id)))
    }

    /// Replaces the file with `entries`, keeping the comment lines people
    /// wrote into it.
    pub fn save(&self, entries: &[Entry]) -> Result<()> {
        let comments = self
            .read()?
            .map_or_else(Comments::default, |text| Comments::of(&text));
        atomic_file::write(&self.path, format::render(entries, &comments).as_bytes())
    }

    /// The file's text; None when there is no file yet.
    fn read(&self) -> Result<Option<String>> {
        read_text(&self.path, "inventory file")
    }

    /// A small named document kept beside the inventory
    /// (`<inventory>.<name>`), if written yet.
    pub fn read_meta(&self, name: &str) -> Result<Option<String>> {
        read_text(&self.sibling(name), "the state file")
    }

    pub fn write_meta(&self, name: &str, value: &str) -> Result<()> {
        atomic_file::write(&self.sibling(name), value.as_bytes())
    }

    /// A secret beside the inventory, readable by its owner only.
    pub fn write_secret(&self, name: &str, value: &str) -> Result<()> {
        atomic_file::write_for(
            &self.sibling(name),
            value.as_bytes(),
            atomic_file::Readers::Owner,
        )
    }

    /// Takes the exclusive lock on the lock file beside the inventory.
    pub async fn lock(&self, timeout: Duration) -> Result<LockFile> {
        LockFile::acquire(&self.lock_path(), timeout).await
    }

    fn lock_path(&self) -> PathBuf {
        self.sibling("lock")
    }

    /// `<inventory>.<suffix>`, in the inventory's folder.
    fn sibling(&self, suffix: &str) -> PathBuf {
        atomic_file::sibling(&self.path, suffix)
    }
}

/// The text of `path` (`what` names it in messages); None when there is no
/// such file. Bytes that are not UTF-8 are named as such, at their line:
/// they are no permission problem.
fn read_text(path: &Path, what: &str) -> Result<Option<String>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => bail!(
            "cannot read {what} {}: {err}; check its permissions",
            path.display()
        ),
    };
    crate::text::utf8(bytes).map(Some).map_err(|err| {
        anyhow::anyhow!(
            "{what} {} {err}; fix or remove that line, then run doproxy reconcile",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

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
            status: Status::New,
            ..Entry::named(9, "web-0")
        };
        inventory.save(std::slice::from_ref(&entry)).unwrap();
        assert_eq!(inventory.load().unwrap(), vec![entry]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bytes_that_are_not_utf8_are_named_at_their_line() {
        let dir = temp_dir("latin1");
        let path = dir.join("inventory");
        fs::write(
            &path,
            b"# caf\xc3\xa9\n9 web-0 - - new -\n10 caf\xe9 - - new -\n",
        )
        .unwrap();
        let err = FileInventory::new(&path).load().unwrap_err().to_string();
        assert!(
            err.contains("is not UTF-8 text: line 3 holds bytes") && !err.contains("permissions"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
