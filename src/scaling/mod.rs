//! Pure scaling decisions: what to call new droplets and which ones a delete
//! means. No I/O here, so every rule is unit-tested.

mod naming;
mod targets;

pub use naming::next_names;
pub use targets::{Selector, select};
