//! A new setup in one step (`doproxy init`) — a commented doproxy.yml that is safe to
//! run (the token left to the environment, the admin socket where Debian
//! puts it, an SSH key placeholder doctor flags) and the tutorial's user
//! data; with `--template`, the HAProxy template to edit. Never overwrites
//! anything.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::haproxy::BUILTIN_TEMPLATE;

const CONFIG: &str = include_str!("../../doproxy.yml.example");
const USER_DATA: &str = include_str!("../../user-data.yml");
/// The example's first line asks to copy it, which init has done.
const EXAMPLE_HEADER: &str =
    "# doproxy configuration. Copy to doproxy.yml next to this file and edit.\n";
const HEADER: &str =
    "# doproxy configuration, written by doproxy init. Edit it, then run doproxy doctor.\n";
/// Where the template goes with --template, and the key that uses it.
const TEMPLATE: &str = "haproxy.cfg.tera";
const TEMPLATE_KEY: &str = "# haproxy_template_file: haproxy.cfg.tera";

/// The files init writes into a folder: names and contents.
fn files(template: bool) -> Vec<(&'static str, String)> {
    let mut config = CONFIG.replacen(EXAMPLE_HEADER, HEADER, 1);
    let mut files = vec![("user-data.yml", USER_DATA.to_string())];
    if template {
        // The written template is the one in use, so editing it takes effect.
        config = config.replacen(TEMPLATE_KEY, TEMPLATE_KEY.trim_start_matches("# "), 1);
        files.push((TEMPLATE, BUILTIN_TEMPLATE.to_string()));
    }
    files.insert(0, ("doproxy.yml", config));
    files
}

/// Writes a new setup into `folder` (created if missing), with the
/// template to edit when `template`; the paths written.
pub fn write_setup(folder: &Path, template: bool) -> Result<Vec<String>> {
    let files = files(template);
    if let Some((name, _)) = files.iter().find(|(name, _)| folder.join(name).exists()) {
        bail!(
            "{} exists already and init never overwrites; move it away or choose another folder",
            folder.join(name).display()
        );
    }
    fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = folder.join(name);
        fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::digitalocean::SshKey;

    #[test]
    fn writes_a_setup_safe_to_run_once() {
        let dir = std::env::temp_dir().join(format!("doproxy-init-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_setup(&dir, false).unwrap();
        let config = fs::read_to_string(dir.join("doproxy.yml")).unwrap();
        assert!(config.starts_with(HEADER), "{config}");
        assert!(
            !config.lines().any(|l| l.starts_with("token:")),
            "the token stays out of the file"
        );
        assert!(!dir.join(TEMPLATE).exists(), "no pinned template");
        let loaded = Config::load(Some(&dir.join("doproxy.yml"))).unwrap();
        assert_eq!(loaded.haproxy.template_file, None);
        assert_eq!(
            loaded.haproxy.socket.as_deref(),
            Some(Path::new("/run/haproxy/admin.sock"))
        );
        assert_eq!(
            loaded.droplets.ssh_keys,
            [SshKey::Fingerprint(
                crate::config::SSH_KEY_PLACEHOLDER.into()
            )]
        );
        let err = write_setup(&dir, false).err().unwrap().to_string();
        assert!(err.contains("never overwrites"), "{err}");
        fs::remove_dir_all(&dir).unwrap();

        write_setup(&dir, true).unwrap();
        let loaded = Config::load(Some(&dir.join("doproxy.yml"))).unwrap();
        assert_eq!(loaded.haproxy.template_file, Some(dir.join(TEMPLATE)));
        assert_eq!(
            fs::read_to_string(dir.join(TEMPLATE)).unwrap(),
            BUILTIN_TEMPLATE
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
