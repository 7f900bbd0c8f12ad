//! A small etcd v3 client for the shared inventory and the failover
//! election, speaking the JSON gateway every etcd 3.4+ server runs on its
//! client port (`POST /v3/kv/range` and friends). doproxy already has
//! reqwest; a gRPC client would add tonic, prost and their dependencies to
//! the build for the handful of calls needed here: ranges, transactions,
//! leases, the lock service and watches.
//!
//! The gateway speaks protobuf's JSON (`wire`): keys and values are base64,
//! 64-bit integers are strings, and fields holding their zero value
//! (`false`, `0`, an empty list, the `PUT` event type) are left out. Watches
//! and lease keepalives are streams of newline-separated `{"result": ...}`
//! objects.
//!
//! Every request asks for a member that has a leader (gRPC metadata
//! `hasleader`, sent as a `Grpc-Metadata-hasleader` header), so a member cut
//! off from its cluster refuses rather than serving old data or a watch that
//! never fires. It knows nothing of doproxy's inventory: keys are the
//! caller's.

mod client;
mod election;
mod error;
mod lease;
mod lock;
mod watch;
mod wire;

pub use client::{Client, Settings};
pub use election::{Election, LeaderKey, Leadership, Unconfirmed};
pub use error::EtcdError;
pub use lock::{Lock, Releasing};
pub use watch::{Change, Watch, WatchUpdate};
pub use wire::{Compare, KeyValue, Op, Put};
