//! Probes for `cargo xtask bench`: each program does one kernel primitive the balancer
//! relies on, so the report can say what the datapath's floor is made of on this machine.
//! Its own object: loading it creates none of the balancer's maps.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{HashMap, LruHashMap},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use lb_common::{DEFAULT_MAX_FLOWS, Flow, FlowKey, MAX_VIPS, VipInfo, VipKey};

/// Same shape and size as the balancer's FLOWS; the bench inserts the probed key.
#[btf_map]
static PROBE_FLOWS: LruHashMap<FlowKey, Flow, { DEFAULT_MAX_FLOWS as usize }> = LruHashMap::new();

/// Same shape and size as the balancer's VIPS; the bench inserts the probed key.
#[btf_map]
static PROBE_VIPS: HashMap<VipKey, VipInfo, { MAX_VIPS as usize }> = HashMap::new();

/// A key the verifier cannot constant-fold (it depends on the frame's length).
#[inline(always)]
fn flow_key(ctx: &XdpContext) -> FlowKey {
    let salt = ((ctx.data_end() - ctx.data()) as u32) >> 16;
    FlowKey {
        src_addr: salt,
        dst_addr: 1,
        src_port: 2,
        dst_port: 3,
        proto: 6,
        _pad0: 0,
        _pad1: 0,
    }
}

#[inline(always)]
fn verdict(hit: bool) -> u32 {
    if hit {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[xdp]
pub fn probe_lru_lookup(ctx: XdpContext) -> u32 {
    verdict(PROBE_FLOWS.get_ptr(flow_key(&ctx)).is_some())
}

#[xdp]
pub fn probe_hash_lookup(ctx: XdpContext) -> u32 {
    let key = VipKey {
        addr: lb_common::ipv4_mapped(flow_key(&ctx).src_addr),
        port: 3,
        proto: 6,
        _pad: 0,
    };
    // SAFETY: read only.
    verdict(unsafe { PROBE_VIPS.get(key) }.is_some())
}

#[xdp]
pub fn probe_ktime(_ctx: XdpContext) -> u32 {
    // SAFETY: helpers without preconditions.
    verdict(unsafe { bpf_ktime_get_ns() } != 1)
}

#[xdp]
pub fn probe_ktime_coarse(_ctx: XdpContext) -> u32 {
    // SAFETY: helpers without preconditions.
    verdict(unsafe { bpf_ktime_get_coarse_ns() } != 1)
}

#[xdp]
pub fn probe_jiffies(_ctx: XdpContext) -> u32 {
    // SAFETY: helpers without preconditions.
    verdict(unsafe { bpf_jiffies64() } != 1)
}
