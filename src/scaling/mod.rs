//! Pure scaling decisions: what to call new droplets, which ones a delete
//! means, how to reach a pool size. No I/O here, so every rule is unit-tested.

pub mod autoscale;
mod drift;
pub mod heal;
mod naming;
mod plan;
pub mod rollout;
mod targets;

pub use drift::{Drift, drift};
pub use naming::next_names;
pub use plan::{Pick, Plan, plan};
pub use targets::{Selector, select};
