//! A live status line on stderr for the waits (droplets booting, readiness,
//! drains), redrawn in place when stderr is a terminal. Cron mail and log
//! files get none of it: they get the timestamped log lines only.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static LIVE: AtomicBool = AtomicBool::new(false);

/// Turns the live line on when stderr is a terminal and the user did not
/// ask for quiet.
pub fn init(quiet: bool) {
    LIVE.store(!quiet && std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// One wait's status line; cleared when dropped.
pub struct Status {
    started: Instant,
    shown: bool,
}

impl Status {
    pub fn new() -> Status {
        Status {
            started: Instant::now(),
            shown: false,
        }
    }

    /// Redraws the line: `⠿ <what> (12s)`.
    pub fn show(&mut self, what: &str) {
        if !LIVE.load(Ordering::Relaxed) {
            return;
        }
        let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let elapsed = self.started.elapsed();
        let frame = frames[(elapsed.as_millis() / 250) as usize % frames.len()];
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{frame} {what} ({}s)", elapsed.as_secs());
        let _ = stderr.flush();
        self.shown = true;
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
