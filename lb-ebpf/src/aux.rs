//! Helper programs for labs and benchmarks, in their own object so loading them creates
//! none of the balancer's maps.
//!
//! - `pass`: XDP_PASS. Benchmark floor, and needed on the peer of a veth that uses XDP_TX
//!   (veth only delivers XDP_TX frames to a peer that runs an XDP program).
//! - `mac_swap`: swap Ethernet addresses, XDP_TX. Benchmark floor for a forwarder.
//! - `l2_forward`: the least a DR forwarder can do: IPv4 frames addressed to slot 0's MAC are
//!   sent to slot 1's MAC. The lab's floor for end-to-end benchmarks.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::xdp_action, btf_maps::Array, macros::btf_map, macros::xdp, programs::XdpContext,
};
use lb_common::Interface;
use network_types::eth::{EthHdr, EtherType};

/// Slot 0: this director's MAC; slot 1: the one backend's MAC.
#[btf_map]
static L2_FORWARD: Array<Interface, 2> = Array::new();

#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn eth(ctx: &XdpContext) -> Option<*mut EthHdr> {
    (ctx.data() + EthHdr::LEN <= ctx.data_end()).then_some(ctx.data() as *mut EthHdr)
}

#[xdp]
pub fn mac_swap(ctx: XdpContext) -> u32 {
    let Some(eth) = eth(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds checked above.
    unsafe { core::mem::swap(&mut (*eth).src_addr, &mut (*eth).dst_addr) };
    xdp_action::XDP_TX
}

#[xdp]
pub fn l2_forward(ctx: XdpContext) -> u32 {
    let Some(eth) = eth(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let (Some(own), Some(backend)) = (L2_FORWARD.get(0), L2_FORWARD.get(1)) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked above; packed fields read and written by value.
    unsafe {
        if (*eth).dst_addr != own.mac || (*eth).ether_type != EtherType::Ipv4 as u16 {
            return xdp_action::XDP_PASS;
        }
        (*eth).src_addr = own.mac;
        (*eth).dst_addr = backend.mac;
    }
    xdp_action::XDP_TX
}
