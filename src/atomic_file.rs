//! Replacing a file so that readers and crashes see the old contents or the
//! new, never a mix: write a temporary file beside it, fsync, rename.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Replaces `path` with `contents`. The temporary file lives in the same
/// folder so the rename stays on one filesystem and is atomic. A replaced
/// file keeps its permissions; a new one is readable by its owner and group
/// only (0640), whatever the umask lets through.
pub fn write(path: &Path, contents: &[u8]) -> Result<()> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let temp = folder.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&temp)?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // The rename itself is durable only once the folder is synced.
        fs::File::open(folder)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.with_context(|| {
        format!(
            "cannot write {}; check that its folder exists and is writable",
            path.display()
        )
    })
}

/// `<file>.<suffix>`, in the same folder: where doproxy keeps what belongs
/// to a file (its lock, backup, last-loaded record, metadata).
pub fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    file.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("doproxy-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inventory");
        write(&path, b"one\n").unwrap();
        write(&path, b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let err = write(&dir.join("missing/inventory"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("missing/inventory"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
