//! Running the user's HAProxy commands (haproxy_check_command,
//! haproxy_reload_command) through `sh -c` without ever waiting forever.
//!
//! Each command runs in a process group of its own, bounded by a timeout.
//! When the bound passes the whole group is killed: killing only `sh` would
//! leave its children (`sleep`, a stuck `systemctl`) holding the output pipes
//! and running on. Its own group also keeps a Ctrl-C meant for doproxy away
//! from a reload that must finish.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// The most a command may print on stdout, and again on stderr: HAProxy's
/// check says a few lines, so more is a command gone wrong, never read whole.
const MAX_OUTPUT: usize = 1024 * 1024;

/// Runs `command` through `sh -c`, at most `timeout`; `key` names the
/// setting in messages. An error carries the exit status and the output.
pub async fn run(key: &str, command: &str, timeout: Duration) -> Result<()> {
    tracing::debug!("running {key}: {command}");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {key} ({command})"))?;
    let group = ProcessGroup(child.id());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let (stdout, stderr) = tokio::try_join!(
            read_capped(stdout, MAX_OUTPUT),
            read_capped(stderr, MAX_OUTPUT)
        )?;
        let status = child.wait().await.map_err(Unread::Failed)?;
        Ok((status, stdout, stderr))
    };
    // Dropping `group` on the way out kills what the command started.
    let (status, stdout, stderr) = match tokio::time::timeout(timeout, finished).await {
        Ok(Ok(finished)) => finished,
        Err(_) => bail!(
            "{key} `{command}` did not finish within {}, so it was killed; fix the command or raise {}",
            humantime::format_duration(timeout),
            timeout_key(key)
        ),
        Ok(Err(Unread::TooMuch)) => bail!(
            "{key} `{command}` printed more than {} MiB, so it was killed; fix the command, or send its output elsewhere (>/dev/null)",
            MAX_OUTPUT >> 20
        ),
        Ok(Err(Unread::Failed(err))) => {
            return Err(err).with_context(|| format!("cannot run {key} ({command})"));
        }
    };
    group.forget();
    let text = shown_output(&stdout, &stderr);
    if status.success() {
        if !text.is_empty() {
            tracing::debug!("{key} said: {text}");
        }
        return Ok(());
    }
    bail!("{key} `{command}` failed ({status}): {text}")
}

/// Why a command's output, or an answer on the admin socket, was not read
/// to its end.
pub(super) enum Unread {
    /// More than the cap.
    TooMuch,
    Failed(std::io::Error),
}

/// What `pipe` carries until it closes; stops as soon as it is past `cap`
/// bytes.
pub(super) async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
) -> Result<Vec<u8>, Unread> {
    let mut output = Vec::new();
    if let Some(pipe) = pipe {
        pipe.take(cap as u64 + 1)
            .read_to_end(&mut output)
            .await
            .map_err(Unread::Failed)?;
    }
    if output.len() > cap {
        return Err(Unread::TooMuch);
    }
    Ok(output)
}

/// The setting that bounds the command set by `key`.
fn timeout_key(key: &str) -> String {
    format!("{}_timeout", key.trim_end_matches("_command"))
}

/// What a command printed, for a message: stdout then stderr, without
/// HAProxy's [NOTICE] lines (version, executable path), which only hide the
/// alert.
fn shown_output(stdout: &[u8], stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout).to_string() + &String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("[NOTICE]"))
        .collect();
    lines.join("\n").trim().to_string()
}

/// A command's process group, killed when dropped unless the command ended
/// on its own: a timeout, or doproxy dropping the wait, ends all of it.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// The command ended by itself; leave what it started (a daemon) alone.
    fn forget(mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(id) = self.0.and_then(|id| i32::try_from(id).ok()) {
            // SAFETY: kill(2) takes plain integers; -id names the group the
            // child leads (process_group(0) made its ID the group's ID).
            unsafe {
                libc::kill(-id, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn failed_commands_carry_their_output() {
        let err = block_on(run(
            "haproxy_check_command",
            "echo '[NOTICE] version' >&2; echo '[ALERT] bad line' >&2; exit 3",
            Duration::from_secs(30),
        ))
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.ends_with("(exit status: 3): [ALERT] bad line"),
            "{text}"
        );
        block_on(run(
            "haproxy_reload_command",
            "true",
            Duration::from_secs(30),
        ))
        .unwrap();
    }

    #[test]
    fn a_command_that_prints_without_end_is_killed() {
        let started = Instant::now();
        let err = block_on(run(
            "haproxy_check_command",
            "yes haproxy",
            Duration::from_secs(60),
        ))
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("printed more than 1 MiB, so it was killed"),
            "{text}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_command_past_its_bound_is_killed_with_its_children() {
        let pid_file = std::env::temp_dir().join(format!("doproxy-group-{}", std::process::id()));
        let started = Instant::now();
        // The background sleep keeps the output pipe open after sh is gone.
        let err = block_on(run(
            "haproxy_reload_command",
            &format!("sleep 3600 & echo $! > {}; sleep 3600", pid_file.display()),
            Duration::from_millis(500),
        ))
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(60));
        let text = format!("{err:#}");
        assert!(
            text.contains("did not finish within 500ms") && text.contains("haproxy_reload_timeout"),
            "{text}"
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        std::fs::remove_file(&pid_file).unwrap();
        // Gone, or a zombie waiting for init to reap it.
        let stat = format!("/proc/{}/stat", pid.trim());
        let dead = || {
            std::fs::read_to_string(&stat).map_or(true, |s| {
                s.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
            })
        };
        let waited = Instant::now();
        while !dead() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the background sleep lives on"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
