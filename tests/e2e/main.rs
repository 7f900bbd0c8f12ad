//! End-to-end tests: the real doproxy binary against the project's
//! DigitalOcean simulator, Debian's HAProxy, etcd (for the etcd inventory)
//! and Pebble (for HTTPS), all on loopback. One test binary, so the build
//! links once.

mod architecture;
mod autoscale;
mod bad_input;
mod checks_first;
mod core;
mod defaults;
mod docs;
mod etcd_faults;
mod etcd_server;
mod etcd_store;
mod events;
mod failover;
mod haproxy_faults;
mod heal;
mod https;
mod latency;
mod linear;
mod metrics;
mod operator;
mod operator_faults;
mod packaging;
mod pebble;
mod readiness;
mod resilience;
mod rollout;
mod runtime_api;
mod scaling;
mod scaling_faults;
mod schedule;
mod security;
mod shared_pool;
mod signals;
mod spawned;
mod support;
mod zero_downtime;
