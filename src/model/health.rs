//! The HTTP check that says a droplet's application is up.

use std::time::Duration;

/// The check: `GET <path>` on `<port>` answered with `<status>`. Used by
/// doproxy before a new droplet joins (readiness), and by HAProxy's own
/// health checks (the template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub port: u16,
    pub status: u16,
    /// How long `create` waits for a new droplet to pass it.
    pub ready_timeout: Duration,
}
