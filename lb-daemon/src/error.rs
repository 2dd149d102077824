//! The daemon's error type.

use std::{net::Ipv4Addr, path::PathBuf};

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
        "backend {addr} ({key}): no MAC in the neighbour table of {interfaces} after an ARP probe; \
         is it on the director's L2 segment? (or set `mac = \"..\"` for it)"
    )]
    Unresolved {
        addr: Ipv4Addr,
        key: String,
        interfaces: String,
    },
    #[error("{BPFFS} is not a mounted BPF filesystem: run `mount -t bpf bpf {BPFFS}`", BPFFS = crate::paths::BPFFS)]
    NoBpffs,
    #[error("instance {instance:?} is already running ({pid}, {pin_dir})", pid = pid.map_or("starting".to_owned(), |p| format!("pid {p}")), pin_dir = pin_dir.display())]
    AlreadyRunning {
        instance: String,
        /// Unknown while the other instance is still starting.
        pid: Option<i32>,
        pin_dir: PathBuf,
    },
    #[error("instance {instance:?} is not running (no pins at {pin_dir})")]
    NotRunning { instance: String, pin_dir: PathBuf },
    #[error("attaching XDP to {interface} in {mode} mode: {cause}{hint}")]
    Attach {
        interface: String,
        mode: &'static str,
        cause: Box<aya::programs::ProgramError>,
        hint: &'static str,
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
    #[error("loading the eBPF object: {0}")]
    Load(Box<aya::EbpfError>),
    #[error("eBPF program: {0}")]
    Program(Box<aya::programs::ProgramError>),
    #[error("map {name}: {cause}")]
    Map {
        name: &'static str,
        cause: Box<aya::maps::MapError>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
