//! XDP direct-routing load balancer.
//!
//! A frame addressed to this director's MAC, carrying IPv4 TCP/UDP to a configured VIP:port,
//! is sent back out (`XDP_TX`) with only its Ethernet addresses rewritten: destination = the
//! chosen real server, source = this director. Everything else is passed to the kernel
//! untouched, or dropped when its headers are truncated. The daemon precomputes every table
//! read here (Maglev rings, backend MACs, timeouts); this program only looks things up.
//!
//! Per packet, in order: `parse` (bounds-checked headers; the VIP prefilter as soon as the
//! destination is known), `conntrack` (per-CPU flow cache, else the LRU flow table), and for
//! a new flow the VIP lookup and `select` (persistence, then the VIP's scheduler over its
//! precomputed ring; a bare SYN is sent on but not tracked, see `conntrack::track`), then
//! the VRRP check (`GROUP_STANDBY`: only the master of the VIP's group forwards), then
//! `forward` (MAC rewrite) and `stats` (per-CPU counters). `maps` declares every map.
//! An ICMP error about a VIP flow takes its own short path (`icmp`) to the flow's backend;
//! a later fragment follows its datagram's first (`fragment`).
#![no_std]
#![no_main]
// `atomic_xadd`: the flow-cache epoch bump (see `conntrack`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod runtime;

mod conntrack;
mod forward;
mod fragment;
mod icmp;
mod maps;
mod parse;
mod select;
mod stats;
mod sync;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_jiffies64, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use lb_common::{BACKEND_F_ACTIVE, BACKEND_F_LOCAL, Backend, FLOW_EVENT_NEW, FlowKey, MacKey};

use crate::conntrack::Lookup;

/// What happened to a frame; each maps to one verdict and one counter.
#[derive(Clone, Copy)]
pub enum Outcome {
    Tx,
    TxIcmpError,
    TxFragment,
    TxFragmentHashed,
    NotForUs,
    NotBalanced,
    NotVip,
    Fragment,
    NotForwarding,
    Local,
    FromBackend,
    Malformed,
    NoBackend,
}

impl Outcome {
    fn action(self) -> u32 {
        match self {
            Outcome::Tx
            | Outcome::TxIcmpError
            | Outcome::TxFragment
            | Outcome::TxFragmentHashed => xdp_action::XDP_TX,
            Outcome::Malformed | Outcome::NoBackend => xdp_action::XDP_DROP,
            Outcome::NotForUs
            | Outcome::NotBalanced
            | Outcome::NotVip
            | Outcome::Fragment
            | Outcome::NotForwarding
            | Outcome::Local
            | Outcome::FromBackend => xdp_action::XDP_PASS,
        }
    }
}

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    let outcome = match process_packet(&ctx) {
        Ok(outcome) | Err(outcome) => outcome,
    };
    stats::count_outcome(outcome);
    outcome.action()
}

#[inline(always)]
fn process_packet(ctx: &XdpContext) -> Result<Outcome, Outcome> {
    let packet = parse::parse(ctx)?;
    let result = process_parsed(ctx, &packet);
    // A first fragment that was not forwarded: its later fragments stay on this host too.
    if packet.fragment == parse::Fragment::First
        && !matches!(result, Ok(Outcome::Tx | Outcome::Local))
    {
        fragment::remember_passed(packet.src_addr, packet.dst_addr, packet.ip_id, packet.proto);
    }
    result
}

#[inline(always)]
fn process_parsed(ctx: &XdpContext, packet: &parse::Packet) -> Result<Outcome, Outcome> {
    let settings = maps::SETTINGS.get(0).ok_or(Outcome::NotForwarding)?;
    if settings.forwarding == 0 {
        return Err(Outcome::NotForwarding);
    }
    let flow_key = FlowKey {
        src_addr: packet.src_addr,
        dst_addr: packet.dst_addr,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        proto: packet.proto,
        _pad0: 0,
        _pad1: 0,
    };
    // SAFETY: a helper without preconditions; the verifier inlines it to a load.
    let now = unsafe { bpf_jiffies64() };
    if packet.icmp_error {
        return icmp::forward_error(ctx, packet, &flow_key, settings, now);
    }
    if packet.fragment == parse::Fragment::Later {
        return fragment::forward_later(ctx, packet, settings, now);
    }

    let (vip_id, backend_id, backend, new_flow) =
        match conntrack::lookup(&flow_key, packet, settings, now) {
            Lookup::Tracked {
                vip_id,
                backend_id,
                backend,
            } => {
                forwarding(backend.group)?;
                // From the very backend the flow goes to: another director balanced it
                // here (two masters, each tracking the flow to the other). Served locally,
                // never sent back.
                if from_itself(packet, backend) {
                    return Err(Outcome::FromBackend);
                }
                (vip_id, backend_id, backend, false)
            }
            Lookup::Untracked { stale } => {
                // SAFETY: map values are only read; the daemon replaces them whole.
                let vip = unsafe { maps::VIPS.get(flow_key.vip_key()) }.ok_or(Outcome::NotVip)?;
                // Checked before scheduling: a backup director tracks nothing.
                forwarding(vip.group)?;
                from_backend(packet, vip.vip_id)?;
                let (backend_id, backend) =
                    select::schedule(ctx, vip, &flow_key, packet, settings, now)?;
                let tracked =
                    conntrack::track(&flow_key, packet, stale, (backend_id, backend), vip, now);
                if tracked {
                    sync::announce(settings, &flow_key, backend, FLOW_EVENT_NEW);
                }
                // Compiled out by the verifier unless lbd runs with --datapath-log debug.
                debug!(
                    ctx,
                    "new flow from port {} to vip {} -> backend {}",
                    u16::from_be(packet.src_port),
                    vip.vip_id,
                    backend_id
                );
                (vip.vip_id, backend_id, backend, tracked)
            }
        };
    if packet.fragment == parse::Fragment::First {
        fragment::remember(packet, backend_id, backend, now);
    }
    stats::count_forwarded(vip_id, backend_id, packet.frame_len, new_flow);
    if backend.flags & BACKEND_F_LOCAL != 0 {
        // This director serves the flow itself: its stack holds the VIP.
        return Ok(Outcome::Local);
    }
    forward::rewrite_macs(packet, backend);
    Ok(Outcome::Tx)
}

/// Writes the conntrack clock (jiffies) into the first 8 bytes of the frame. Run by
/// `lbd status` through BPF_PROG_TEST_RUN, never attached.
#[xdp]
pub fn clock(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 8 <= ctx.data_end() {
        // SAFETY: bounds checked above; a helper without preconditions.
        unsafe { *(start as *mut [u8; 8]) = bpf_jiffies64().to_ne_bytes() };
    }
    xdp_action::XDP_PASS
}

/// Whether this director forwards the VIPs of `group` (it is their VRRP master, or they
/// have no VRRP instance). One inlined array read.
#[inline(always)]
pub fn forwarding(group: u32) -> Result<(), Outcome> {
    match maps::GROUP_STANDBY.get(group) {
        Some(&0) => Ok(()),
        _ => Err(Outcome::NotForwarding),
    }
}

/// Whether the frame comes from `backend`, another host (a frame whose source is its own
/// destination, this director, is not from another director).
#[inline(always)]
fn from_itself(packet: &parse::Packet, backend: &Backend) -> bool {
    // SAFETY: `parse` bounds-checked the Ethernet header.
    let (src, dst) = unsafe { ((*packet.eth).src_addr, (*packet.eth).dst_addr) };
    src == backend.mac && src != dst
}

/// A new flow from a backend of its own VIP was balanced here by another director (a
/// backend holds the VIP and sends it nothing over the wire): the local stack serves it.
/// One hash lookup, on new flows only.
#[inline(always)]
fn from_backend(packet: &parse::Packet, vip_id: u32) -> Result<(), Outcome> {
    // SAFETY: `parse` bounds-checked the Ethernet header.
    let (src, dst) = unsafe { ((*packet.eth).src_addr, (*packet.eth).dst_addr) };
    if src == dst {
        return Ok(());
    }
    let key = MacKey {
        mac: src,
        _pad: [0; 2],
    };
    // SAFETY: map values are only read.
    match unsafe { maps::BACKEND_MACS.get(key) } {
        Some(vips) if vips & (1u64 << (vip_id & 63)) != 0 => Err(Outcome::FromBackend),
        _ => Ok(()),
    }
}

/// Whether a backend entry may still receive packets.
#[inline(always)]
fn usable(backend: &Backend) -> bool {
    backend.flags & BACKEND_F_ACTIVE != 0
}
