//! Health checks: whether each backend may take new flows.
//!
//! - [`probe`]: one check (redis, tcp, script), bounded by its timeout: the only I/O, with
//!   [`resp`], a checker's own Redis connection.
//! - [`monitor`]: one checker task per backend, spread over the interval; they only report.
//! - [`board`]: every backend's state (rise/fall in [`tracker`], role in [`replication`]),
//!   and the effective desired state it makes of the config's: the daemon hands that to the
//!   [`Applier`](crate::apply::Applier), the one writer of the maps.
//! - [`sentinel`]: a write VIP's Sentinel watcher (`+switch-master`); it only reports too.
//! - [`load`]: load-aware weights and memory-aware drain (pure).
//! - [`notify`]: `notify_up` / `notify_down` commands, in the background.
//! - [`report`]: the state file `lbd status` reads.

pub mod board;
pub mod load;
pub mod monitor;
pub mod notify;
pub mod probe;
pub mod replication;
pub mod report;
pub mod resp;
pub mod sentinel;
pub mod tracker;

pub use board::{BackendKey, Board, CheckSpec, Outcome};
pub use monitor::{Monitor, Report};
pub use replication::Replication;
pub use sentinel::SentinelReport;
