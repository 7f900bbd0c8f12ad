//! Pure decisions: what to call new droplets, which ones a delete means, how
//! to reach a pool size, when to scale (`autoscale`, with the windows of
//! its `schedule`), what to heal, how a
//! rollout steps, where the inventory and DigitalOcean disagree (`drift`),
//! and when a proxy leads the failover. No I/O here, so every rule is
//! unit-tested; the operations that carry them out are in `ops`.

pub mod autoscale;
mod drift;
pub mod failover;
pub mod heal;
mod naming;
mod plan;
pub mod rollout;
pub mod schedule;
mod targets;

pub use drift::{Drift, drift, take_foreign};
pub use naming::next_names;
pub use plan::{Pick, Plan, plan};
pub use targets::{Selector, select};
