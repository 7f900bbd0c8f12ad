//! `init`: a new setup in one step (`ops::init`): a commented doproxy.yml
//! that is safe to run and the tutorial's user data; with `--template`, the
//! HAProxy template to edit. Never overwrites anything.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Report;
use crate::ops::init::write_setup;

pub fn run(folder: &Path, template: bool) -> Result<Report> {
    let written = write_setup(folder, template)?;
    let text = vec![
        format!("Wrote {}.", written.join(", ")),
        "Next: put your SSH key in ssh_key_ids, edit droplet_options, export DIGITALOCEAN_ACCESS_TOKEN, then run doproxy doctor."
            .to_string(),
    ];
    Report::new(text, json!({ "written": written }))
}
