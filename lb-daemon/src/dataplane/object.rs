//! The eBPF objects, embedded at build time when `LB_EBPF_DIR` was set (see build.rs).

use crate::error::{Error, Result};

static LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.bpf.o"));
static AUX: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/aux.bpf.o"));
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));

/// The load balancer (`lb` program and its maps).
pub fn lb() -> Result<&'static [u8]> {
    if LB.is_empty() {
        Err(Error::NoEbpfObject)
    } else {
        Ok(LB)
    }
}

/// Lab and benchmark helpers: `pass`, `mac_swap`, `l2_forward`.
pub fn aux() -> Result<&'static [u8]> {
    if AUX.is_empty() {
        Err(Error::NoEbpfObject)
    } else {
        Ok(AUX)
    }
}

/// Benchmark probes: one kernel primitive per program.
pub fn probes() -> Result<&'static [u8]> {
    if PROBES.is_empty() {
        Err(Error::NoEbpfObject)
    } else {
        Ok(PROBES)
    }
}
