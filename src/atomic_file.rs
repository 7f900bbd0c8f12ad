//! Replacing a file so that readers and crashes see the old contents or the
//! new, never a mix: write a temporary file beside it, fsync, rename.
//!
//! doproxy often runs as root in folders others may write to, so the
//! temporary file gets a name nobody can guess and is created only if
//! nothing is there (O_EXCL, O_NOFOLLOW): a link planted in its place is
//! never written through. A file to replace that is itself a symbolic link
//! is refused rather than followed (a link planted there would otherwise
//! make root overwrite whatever it points to) or silently replaced by a
//! plain file (which would cut a link the user made).

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Who may read a file doproxy creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Its owner and group (0640): the inventory, its state, the live config.
    OwnerAndGroup,
    /// Everyone (0644): files other services read as their own user, such
    /// as node-exporter's textfile and the staged config.
    Everyone,
    /// Its owner alone (0600), always, even when the file was readable by
    /// more before: private keys.
    Owner,
}

impl Readers {
    fn mode(self) -> u32 {
        match self {
            Readers::OwnerAndGroup => 0o640,
            Readers::Everyone => 0o644,
            Readers::Owner => 0o600,
        }
    }
}

/// Replaces `path` with `contents`; a new file is readable by its owner
/// and group only (0640), whatever the umask.
pub fn write(path: &Path, contents: &[u8]) -> Result<()> {
    write_for(path, contents, Readers::OwnerAndGroup)
}

/// Replaces `path` with `contents`. The temporary file lives in the same
/// folder so the rename stays on one filesystem and is atomic. A replaced
/// file keeps its permissions; a new one gets those `readers` call for,
/// whatever the umask.
pub fn write_for(path: &Path, contents: &[u8], readers: Readers) -> Result<()> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let existing = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::read_link(path)
                .map(|target| format!(" (to {})", target.display()))
                .unwrap_or_default();
            bail!(
                "{} is a symbolic link{target}, and doproxy replaces files but never writes through a link; point the setting at the file itself",
                path.display()
            );
        }
        Ok(meta) => Some(meta.permissions()),
        Err(_) => None,
    };
    let (temp, mut file) = create_temp(folder, &name.to_string_lossy()).with_context(|| {
        format!(
            "cannot write {}; check that its folder exists and is writable",
            path.display()
        )
    })?;
    let written = (|| -> std::io::Result<()> {
        let permissions = match existing {
            Some(existing) if readers != Readers::Owner => existing,
            _ => fs::Permissions::from_mode(readers.mode()),
        };
        file.set_permissions(permissions)?;
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

/// A new file `.<name>.<random>.tmp` in `folder`, created only if nothing
/// by that name exists (no link followed), owner-only until it is filled.
fn create_temp(folder: &Path, name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let mut tries = 0;
    loop {
        let temp = folder.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        let opened = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&temp);
        match opened {
            Ok(file) => return Ok((temp, file)),
            Err(err) if err.kind() == ErrorKind::AlreadyExists && tries < 10 => tries += 1,
            Err(err) => return Err(err),
        }
    }
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

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("doproxy-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = temp_dir("replace");
        let path = dir.join("inventory");
        write(&path, b"one\n").unwrap();
        write(&path, b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let err = write(&dir.join("missing/inventory"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("missing/inventory"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_files_get_their_mode_and_replaced_ones_keep_theirs() {
        let dir = temp_dir("modes");
        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        write(&dir.join("private"), b"x").unwrap();
        write_for(&dir.join("public"), b"x", Readers::Everyone).unwrap();
        assert_eq!((mode("private"), mode("public")), (0o640, 0o644));
        fs::set_permissions(dir.join("public"), fs::Permissions::from_mode(0o600)).unwrap();
        write_for(&dir.join("public"), b"y", Readers::Everyone).unwrap();
        assert_eq!(mode("public"), 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_never_written_through() {
        let dir = temp_dir("links");
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        // The file to replace is a link: refused, link and target as they were.
        let link = dir.join("haproxy.cfg");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = format!("{:#}", write(&link, b"config\n").unwrap_err());
        assert!(
            err.contains("haproxy.cfg is a symbolic link (to ") && err.contains("victim"),
            "{err}"
        );
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        // Temporary names cannot be guessed from one run to the next.
        let (a, _) = create_temp(&dir, "x").unwrap();
        let (b, _) = create_temp(&dir, "x").unwrap();
        assert_ne!(a, b);
        fs::remove_dir_all(&dir).unwrap();
    }
}
