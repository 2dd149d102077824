//! Types and names shared by the XDP datapath (`lb-ebpf`) and the daemon (`lb-daemon`).
//!
//! - [`types`]: `#[repr(C)]` keys and values of every map, byte order noted per field.
//! - [`maps`]: map names and capacities, defined once so the loader never repeats a literal.
//! - [`stats`]: counter records (per-CPU in the kernel, summed by the daemon).
//! - [`hash`]: the flow hash, shared so the daemon and tests can predict the datapath's choice.
//!
//! `no_std`; the `user` feature adds `aya::Pod` impls for the daemon.
#![no_std]

pub mod hash;
pub mod maps;
pub mod stats;
pub mod types;

pub use maps::*;
pub use stats::*;
pub use types::*;
