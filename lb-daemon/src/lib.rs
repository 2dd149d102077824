//! `lbd`: the control plane of the XDP direct-routing load balancer.
//!
//! - [`config`]: TOML parsing and validation (pure).
//! - [`maglev`]: weighted Maglev tables (pure).
//! - [`reconcile`]: desired state -> ordered map writes (pure).
//! - [`health`]: health checks (redis, tcp, script) and what they make of the desired state.
//! - [`apply`]: the one owner of those writes; re-reads the maps after a failed one.
//! - [`netdev`]: interface MACs and neighbour resolution.
//! - [`host`]: privileges and namespaces, for errors that say what to do.
//! - [`instance`]: is an instance's daemon alive, and which pid (lock + pid file).
//! - [`dataplane`]: loading, pinning, attaching, typed map writes and reads.
//! - [`daemon`]: `lbd run` (start, SIGHUP reload, clean stop).
//! - [`control`]: `lbd reload` / `lbd status` against a running instance.
//! - [`status`]: the status table.
//! - [`vrrp`]: VRRP failover: adverts and state machine (pure), and their own thread.
//! - [`sync`]: flow-state sync between directors.
//! - [`paths`], [`error`]: every path, every error.

pub mod apply;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod error;
pub mod health;
pub mod hold;
pub mod host;
pub mod import;
pub mod instance;
pub mod maglev;
pub mod metrics;
pub mod netdev;
pub mod paths;
pub mod realserver;
pub mod reconcile;
pub mod round_robin;
pub mod stats;
pub mod status;
pub mod status_json;
pub mod sync;
pub mod vrrp;
