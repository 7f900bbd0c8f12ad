//! Where the inventory lives, as doproxy.yml says: the store's settings.

use std::fmt;
use std::path::PathBuf;

use crate::etcd;
use crate::model::Pool;

/// The store: a flat file (the default), or etcd.
#[derive(Debug)]
pub enum StoreSettings {
    /// inventory_file.
    File(PathBuf),
    /// inventory_backend: etcd (boxed: one per process, and far larger).
    Etcd(Box<EtcdSettings>),
}

/// Where the inventory lives in etcd and how to reach it.
pub struct EtcdSettings {
    /// How to reach etcd.
    pub client: etcd::Settings,
    /// Every key of this pool starts with it, e.g. `/doproxy/doproxy:web/`.
    pub prefix: String,
    /// The pool whose inventory this is.
    pub pool: Pool,
    /// The prefix pools shared before each had its own by default
    /// (`/doproxy/doproxy/`), when this pool's default moved away from it:
    /// droplets of the pool still there have to be moved first.
    pub shared_prefix: Option<String>,
}

impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.client.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.client.username)
            .field(
                "password",
                &self.client.password.as_ref().map(|_| "<hidden>"),
            )
            .finish_non_exhaustive()
    }
}
