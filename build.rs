//! Build information for `doproxy --version`: the git commit the binary was
//! built from and the build date, so an operator can tell which build runs
//! on a droplet. Builds without git (a source tarball) say `unknown`.
//! `SOURCE_DATE_EPOCH` (seconds), as Debian's reproducible builds set it,
//! replaces the clock.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    // Build again when HEAD moves: it names a branch whose ref changes on
    // commit, or a commit itself. Worktrees keep these files elsewhere.
    for file in ["HEAD", "packed-refs"] {
        rerun_if_git_path_changed(file);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        rerun_if_git_path_changed(&branch);
    }
    if commit.is_none() {
        // No git, or not found: try again where the PATH differs.
        println!("cargo:rerun-if-env-changed=PATH");
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!(
        "cargo:rustc-env=DOPROXY_BUILD=commit {}, built {}",
        commit.as_deref().unwrap_or("unknown"),
        date(seconds)
    );
}

/// What `git ARGS` prints in the crate's folder, if git runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Cargo runs a build script every time when a file it names is missing,
/// so only files that exist are named (a packed ref lives in packed-refs).
fn rerun_if_git_path_changed(name: &str) {
    if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", name])
        && std::path::Path::new(&path).exists()
    {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time: Howard Hinnant's days-to-civil.
fn date(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
