//! Stopping on SIGTERM and SIGINT (systemctl stop, Ctrl-C) without leaving
//! work half done. A signal does not kill doproxy: it sets a flag that
//! commands check between steps and that long waits select on, so a step
//! that must not be cut (installing a config and reloading HAProxy, recording
//! a droplet the API made) always finishes. A second signal stops at once.
//!
//! The flag is set in the signal handler itself, not by a task that runs
//! later: a check made right after a wait ends must see a signal that
//! arrived during it, or a droplet could be created after Ctrl-C.

use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// The number of the first signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signals doproxy stops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Terminate => libc::SIGTERM,
            Signal::Interrupt => libc::SIGINT,
        }
    }

    fn from_number(number: i32) -> Option<Signal> {
        [Signal::Terminate, Signal::Interrupt]
            .into_iter()
            .find(|signal| signal.number() == number)
    }

    /// The exit status a shell reports for a process this signal killed.
    fn exit_code(self) -> i32 {
        128 + self.number()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        })
    }
}

/// A command stopped between steps because a signal asked it to.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {signal}{}", left.map(|left| format!(" {left}")).unwrap_or_default())]
pub struct Interrupted {
    pub signal: Signal,
    /// What the stop left, when the place it happened knows it all.
    pub left: Option<&'static str>,
}

impl Interrupted {
    fn new(signal: Signal) -> Interrupted {
        Interrupted { signal, left: None }
    }

    /// This stop, saying what it left: "while waiting for the inventory
    /// lock; nothing was changed".
    pub fn leaving(self, left: &'static str) -> Interrupted {
        Interrupted {
            left: Some(left),
            ..self
        }
    }
}

/// Whether a stop was asked for; clones share the flag. Passed into every
/// long-running piece, as mini-redis passes its shutdown signal.
#[derive(Clone)]
pub struct Shutdown {
    requested: watch::Receiver<Option<Signal>>,
}

impl Shutdown {
    /// Starts listening for SIGTERM and SIGINT. Must run inside the tokio
    /// runtime. The first signal sets the flag; a second one ends the process
    /// at once, for an operator who really means it.
    pub fn listen() -> std::io::Result<Shutdown> {
        for signal in [Signal::Terminate, Signal::Interrupt] {
            let number = signal.number();
            // SAFETY: the action only stores to an atomic, which is
            // async-signal-safe.
            unsafe {
                signal_hook_registry::register(number, move || {
                    let _ =
                        RECEIVED.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst);
                })
            }?;
        }
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (sender, requested) = watch::channel(None);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let received = tokio::select! {
                    _ = terminate.recv() => Signal::Terminate,
                    _ = interrupt.recv() => Signal::Interrupt,
                };
                if !first {
                    eprintln!(
                        "doproxy: error: stopped at once by a second {received}; run doproxy reconcile to see what was left unfinished"
                    );
                    std::process::exit(received.exit_code());
                }
                first = false;
                tracing::warn!(
                    "{received} received: finishing the current step, then stopping (send it again to stop at once)"
                );
                let _ = sender.send(Some(received));
            }
        });
        Ok(Shutdown { requested })
    }

    /// Err once a stop was asked for: call it between steps.
    pub fn check(&self) -> Result<(), Interrupted> {
        match Signal::from_number(RECEIVED.load(Ordering::SeqCst)) {
            Some(signal) => Err(Interrupted::new(signal)),
            None => Ok(()),
        }
    }

    /// Resolves once a stop is asked for (at once if it already was); for
    /// `tokio::select!` against a wait.
    pub async fn signalled(&self) -> Interrupted {
        if let Err(stopped) = self.check() {
            return stopped;
        }
        let mut requested = self.requested.clone();
        // Copied out at once: holding the borrow would make this future
        // unsendable (the metrics endpoint awaits it in a task of its own).
        let signal = requested.wait_for(Option::is_some).await.map(|s| *s);
        match signal {
            Ok(signal) => Interrupted::new(signal.expect("waited for Some")),
            // The listener never ends while the runtime runs.
            Err(_) => std::future::pending().await,
        }
    }
}
