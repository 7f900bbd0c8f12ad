//! The core model: a droplet as doproxy knows it (`Entry`, its `Status`,
//! its `Build`), the checked field types every piece of text from outside
//! becomes before it is kept, and which droplets are a pool's. Values and
//! the rules over them only; no I/O, and nothing of the layers above.

mod entry;
mod event;
mod field;
mod health;
mod pool;

#[cfg(test)]
pub use entry::samples;
pub use entry::{Build, Entry, Observed, RefusedDroplet, Status, user_data_digest};
pub use event::{Actor, Change, Event, EventTime, Kind, Severity};
pub use field::{DropletName, InvalidField, Slug, Timestamp};
pub use health::HealthCheck;
pub use pool::{Pool, SHARED_TAG, is_pool_name};
