//! The daemon's error type.

use std::{net::IpAddr, path::PathBuf};

use crate::{config::ConfigErrors, reconcile::ReconcileError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(
        "this lbd was built without its eBPF objects: build them with `cargo xtask build-ebpf` \
         (`cargo xtask run` and `cargo xtask test` do it for you)"
    )]
    NoEbpfObject,
    #[error("interface {name}: {cause}")]
    Interface { name: String, cause: std::io::Error },
    #[error(
        "backend {addr} ({key}): no MAC in the neighbour table of {interfaces} after an ARP or neighbour-discovery probe; \
         is it on the director's L2 segment? (or set `mac = \"..\"` for it)"
    )]
    Unresolved {
        addr: IpAddr,
        key: String,
        interfaces: String,
    },
    #[error("{BPFFS} is not a mounted BPF filesystem: {hint}", BPFFS = crate::paths::BPFFS)]
    NoBpffs {
        /// What to do: mount it, or (inside `ip netns exec`) use `--netns`.
        hint: String,
    },
    #[error(
        "{what} needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or CAP_SYS_ADMIN): {detail}"
    )]
    NeedsPrivilege { what: &'static str, detail: String },
    #[error("instance {instance:?} is already running ({pid}, {pin_dir})", pid = pid.map_or("starting".to_owned(), |p| format!("pid {p}")), pin_dir = pin_dir.display())]
    AlreadyRunning {
        instance: String,
        /// Unknown while the other instance is still starting.
        pid: Option<i32>,
        pin_dir: PathBuf,
    },
    #[error("instance {instance:?} is not running (no pins at {pin_dir})")]
    NotRunning { instance: String, pin_dir: PathBuf },
    #[error(
        "instance {instance:?}: the daemon is not running (it stopped without cleaning up, e.g. \
         killed), but its datapath is still attached and forwarding with the last applied \
         configuration (pins at {pin_dir}). `lbd run --config FILE` takes it over, tracked \
         connections and counters kept; `lbd stop --instance {instance}` detaches it and \
         removes the pins", pin_dir = pin_dir.display()
    )]
    DaemonGone { instance: String, pin_dir: PathBuf },
    #[error(
        "cannot take over the datapath pinned at {pin_dir}: {why}. It is left forwarding, \
         untouched, with its tracked connections. To replace it (its connections are then \
         rescheduled), stop it with `lbd stop` for this instance and start again", pin_dir = pin_dir.display()
    )]
    LayoutChanged { pin_dir: PathBuf, why: String },
    #[error("instance {instance:?} is starting ({}); try again once it serves", pid.map_or("pid unknown".to_owned(), |p| format!("pid {p}")))]
    Starting { instance: String, pid: Option<i32> },
    #[error("attaching XDP to {interface} in {mode} mode: {}{hint}", chain(cause.as_ref()))]
    Attach {
        interface: String,
        mode: &'static str,
        cause: Box<aya::programs::ProgramError>,
        hint: String,
    },
    #[error(
        "interface {interface} is busy: it already has an XDP program attached{holder}. lbd \
         never replaces another program: detach it first (`bpftool net show dev {interface}` \
         shows it; `ip link set dev {interface} xdp off` removes one attached without a link)"
    )]
    InterfaceBusy {
        interface: String,
        /// ", by lbd instance \"x\" (...)" when the holder is one of ours.
        holder: String,
    },
    #[error("{what} {path}: {cause}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Reconcile(#[from] ReconcileError),
    #[error(
        "applying the new configuration failed midway ({cause}); {}",
        if *restored { "the running configuration was restored" } else { "restoring the running configuration failed too: the maps are re-read and fixed by the next reload" }
    )]
    ApplyFailed { cause: Box<Error>, restored: bool },
    #[error("reload refused: {0}")]
    ReloadRefused(String),
    #[error("the daemon kept its running configuration: {0}")]
    ReloadRejected(String),
    /// Neither configuration is in the maps in full; the daemon retries at the next reload.
    #[error("the reload failed and the maps hold part of each configuration: {0}")]
    ReloadFailed(String),
    #[error("loading the eBPF object: {0}")]
    Load(Box<aya::EbpfError>),
    #[error("eBPF program: {0}")]
    Program(Box<aya::programs::ProgramError>),
    #[error("map {name}: {}", chain(cause.as_ref()))]
    Map {
        name: &'static str,
        cause: Box<aya::maps::MapError>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("VRRP: {0}")]
    Vrrp(String),
}

// aya's errors are large; boxed, they keep every `Result` in the daemon small.
impl From<aya::EbpfError> for Error {
    fn from(err: aya::EbpfError) -> Self {
        Error::Load(Box::new(err))
    }
}

impl From<aya::programs::ProgramError> for Error {
    fn from(err: aya::programs::ProgramError) -> Self {
        Error::Program(Box::new(err))
    }
}

/// An error and its sources, `: `-separated (aya's syscall errors keep the errno in a
/// source, which `Display` alone drops).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// The OS error somewhere in `err`'s sources, if any.
pub fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        current = e.source();
    }
    None
}

impl Error {
    /// A failed operation on the map `name`.
    pub fn map(name: &'static str, cause: aya::maps::MapError) -> Self {
        Error::Map {
            name,
            cause: Box::new(cause),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
