//! `init`: a new setup in one step — a commented doproxy.yml (the token left
//! to the environment), the HAProxy template to edit, and the tutorial's
//! user data — never overwriting anything.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::Report;
use crate::haproxy::BUILTIN_TEMPLATE;

const CONFIG: &str = include_str!("../../doproxy.yml.example");
const USER_DATA: &str = include_str!("../../user-data.yml");

pub fn run(folder: &Path) -> Result<Report> {
    // The written template is the one in use, so editing it takes effect.
    let config = CONFIG.replace(
        "# haproxy_template_file: haproxy.cfg.tera",
        "haproxy_template_file: haproxy.cfg.tera",
    );
    let files = [
        ("doproxy.yml", config.as_str()),
        ("haproxy.cfg.tera", BUILTIN_TEMPLATE),
        ("user-data.yml", USER_DATA),
    ];
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
    let text = vec![
        format!("Wrote {}.", written.join(", ")),
        "Next: edit doproxy.yml, export DIGITALOCEAN_ACCESS_TOKEN, then run doproxy doctor."
            .to_string(),
    ];
    Report::new(text, json!({ "written": written }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_working_setup_once() {
        let dir = std::env::temp_dir().join(format!("doproxy-init-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        run(&dir).unwrap();
        let config = fs::read_to_string(dir.join("doproxy.yml")).unwrap();
        assert!(config.contains("\nhaproxy_template_file: haproxy.cfg.tera\n"));
        assert!(
            !config.lines().any(|l| l.starts_with("token:")),
            "the token stays out of the file"
        );
        let loaded = crate::config::Config::load(Some(&dir.join("doproxy.yml"))).unwrap();
        assert_eq!(
            loaded.haproxy_template_file,
            Some(dir.join("haproxy.cfg.tera"))
        );
        let err = run(&dir).err().unwrap().to_string();
        assert!(err.contains("never overwrites"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
