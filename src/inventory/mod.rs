//! The inventory: which droplets belong to the pool, with everything `print`
//! and `generate` need, so neither makes an API call.

mod drift;
mod entry;
mod file;

pub use drift::drift;
pub use entry::{Entry, Status};
pub use file::{FileInventory, InventoryLock};
