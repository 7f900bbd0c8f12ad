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

/// The manual page, one page: the top-level command, then a COMMANDS
/// section with a subsection per command (`doproxy inventory export`
/// included). clap_mangen's own list of subcommands would point at a page
/// per command (`doproxy-print(1)`), which nothing installs.
pub fn man() -> Result<Report> {
    let command = Cli::command();
    let top = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in command.get_subcommands() {
        describe(&mut page, sub, "doproxy")?;
    }
    top.render_version_section(&mut page)?;
    text_report(String::from_utf8(page)?, "man")
}

/// `command`'s subsection, `doproxy print` under `parent` `doproxy`:
/// synopsis, description and options; then those of its own subcommands.
fn describe(page: &mut Vec<u8>, command: &clap::Command, parent: &str) -> Result<()> {
    let name = format!("{parent} {}", command.get_name());
    let man = clap_mangen::Man::new(command.clone().bin_name(&name));
    page.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
    let mut sections = Vec::new();
    man.render_synopsis_section(&mut sections)?;
    man.render_description_section(&mut sections)?;
    man.render_options_section(&mut sections)?;
    // A paragraph for each section heading; the quote-string setup that
    // starts each rendering is the title's already.
    for line in String::from_utf8(sections)?.lines() {
        let line = match line {
            heading if heading.starts_with(".SH ") => ".PP",
            setup if setup.starts_with(".ie ") || setup.starts_with(".el ") => continue,
            line => line,
        };
        page.extend_from_slice(line.as_bytes());
        page.push(b'\n');
    }
    for sub in command.get_subcommands() {
        describe(page, sub, &name)?;
    }
    Ok(())
}

fn text_report(text: String, key: &str) -> Result<Report> {
    let lines = text.lines().map(str::to_string).collect();
    Report::new(lines, json!({ key: text }))
}
