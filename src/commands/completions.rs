//! `completions` and `man`: shell completion scripts and the manual page,
//! generated from the same clap definitions as `--help`, so they never drift.

use anyhow::Result;
use clap::CommandFactory;
use serde_json::json;

use super::Report;
use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> Result<Report> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "doproxy", &mut script);
    text_report(String::from_utf8(script)?, "script")
}

/// The manual page: the top-level command, then one section per
/// subcommand with its own options.
pub fn man() -> Result<Report> {
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands() {
        let mut section = Vec::new();
        let name = format!("doproxy-{}", sub.get_name());
        clap_mangen::Man::new(sub.clone().bin_name(name)).render(&mut section)?;
        // Each rendering starts a new page; keep its body only.
        let text = String::from_utf8(section)?;
        page.extend(
            text.lines()
                .filter(|l| !l.starts_with(".TH "))
                .flat_map(|l| [l.as_bytes(), b"\n"])
                .flatten(),
        );
    }
    text_report(String::from_utf8(page)?, "man")
}

fn text_report(text: String, key: &str) -> Result<Report> {
    let lines = text.lines().map(str::to_string).collect();
    Report::new(lines, json!({ key: text }))
}
