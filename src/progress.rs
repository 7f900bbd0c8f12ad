//! A live status line on stderr for the waits (droplets booting, readiness,
//! drains), redrawn in place when stderr is a terminal. Cron mail and log
//! files get none of it: they get the timestamped log lines only. Log lines
//! go through `LogWriter`, which clears a drawn status line first so that a
//! log line never continues the status line's text.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static LIVE: AtomicBool = AtomicBool::new(false);
/// A status line is on the screen, without a newline after it.
static DRAWN: AtomicBool = AtomicBool::new(false);
/// Returns the cursor to the start of the line and erases it.
const CLEAR_LINE: &str = "\r\x1b[2K";

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
        let _ = write!(
            stderr,
            "{CLEAR_LINE}{frame} {what} ({}s)",
            elapsed.as_secs()
        );
        let _ = stderr.flush();
        DRAWN.store(true, Ordering::Relaxed);
        self.shown = true;
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        if self.shown && DRAWN.swap(false, Ordering::Relaxed) {
            let _ = write!(std::io::stderr(), "{CLEAR_LINE}");
        }
    }
}

/// stderr for log lines: erases a drawn status line before the first line
/// written after it; the next `Status::show` draws it again below.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        if DRAWN.swap(false, Ordering::Relaxed) {
            stderr.write_all(CLEAR_LINE.as_bytes())?;
        }
        stderr.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
