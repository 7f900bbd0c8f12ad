//! Operations that do I/O, composed from the clients and stores below:
//! what commands call to act on the pool.

pub mod api;
pub mod apply;
pub mod droplet;
pub mod frontend;
