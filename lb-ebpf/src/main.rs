//! XDP direct-routing load balancer.
//!
//! A frame addressed to this director's MAC, carrying TCP/UDP over IPv4 or IPv6 to a
//! configured VIP:port,
//! is sent back out (`XDP_TX`) with only its Ethernet addresses rewritten: destination = the
//! chosen real server, source = this director. Everything else is passed to the kernel
//! untouched, or dropped when its headers are truncated. The daemon precomputes every table
//! read here (Maglev rings, backend MACs, timeouts); this program only looks things up.
//!
//! Per packet, in order: `parse` (bounds-checked headers, IPv6 in `parse6`; the VIP
//! prefilter as soon as the destination is known); the rest is generic over the address
//! `family`: `conntrack` (per-CPU flow cache, else the LRU flow table), and for
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
mod family;
mod forward;
mod fragment;
mod icmp;
mod icmp6;
mod maps;
mod parse;
mod parse6;
mod select;
mod stats;
mod sync;
mod wire;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_jiffies64, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_LOCAL, Backend, FLOW_EVENT_NEW, FlowTuple, MacKey, PROTO_TCP,
    hash::mac_filter_slot,
};
use network_types::eth::EthHdr;

use crate::{
    conntrack::Lookup,
    family::{Family, V4, V6},
};

/// What happened to a frame; each maps to one verdict and one counter. In the order of
/// `VerdictCounters`' fields (`stats` counts by index), forwarded first, dropped last.
#[derive(Clone, Copy)]
#[repr(u32)]
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
    /// Two compares: the forwarded outcomes come first, the dropped ones last.
    fn action(self) -> u32 {
        let index = self as u32;
        if index <= Outcome::TxFragmentHashed as u32 {
            xdp_action::XDP_TX
        } else if index >= Outcome::Malformed as u32 {
            xdp_action::XDP_DROP
        } else {
            xdp_action::XDP_PASS
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
    let link = parse::link(ctx)?;
    if link.ipv6 {
        let packet = parse6::parse_ipv6(ctx, &link).map_err(|e| for_us(ctx, &link, e))?;
        parse::addressed_to_us(ctx, link.eth)?;
        process::<V6>(ctx, &packet)
    } else {
        let packet = parse::parse_ipv4(ctx, &link).map_err(|e| for_us(ctx, &link, e))?;
        parse::addressed_to_us(ctx, link.eth)?;
        process::<V4>(ctx, &packet)
    }
}

/// A parse failure as the frame's outcome: a malformed frame is dropped only when it is
/// addressed to this director; another host's frame is passed as it came, whatever its
/// headers (the host may bridge it).
#[inline(always)]
fn for_us(ctx: &XdpContext, link: &parse::Link, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Malformed => match parse::addressed_to_us(ctx, link.eth) {
            Ok(()) => Outcome::Malformed,
            Err(not_for_us) => not_for_us,
        },
        other => other,
    }
}

#[inline(always)]
fn process<F: Family>(
    ctx: &XdpContext,
    packet: &parse::Packet<F::Addr>,
) -> Result<Outcome, Outcome> {
    let result = process_parsed::<F>(ctx, packet);
    // A first fragment that was not forwarded: its later fragments stay on this host too.
    if packet.fragment == parse::Fragment::First
        && !matches!(result, Ok(Outcome::Tx | Outcome::Local))
    {
        fragment::remember_passed(
            F::words(packet.src_addr),
            F::words(packet.dst_addr),
            packet.ip_id,
            packet.fragment_proto,
        );
    }
    result
}

#[inline(always)]
fn process_parsed<F: Family>(
    ctx: &XdpContext,
    packet: &parse::Packet<F::Addr>,
) -> Result<Outcome, Outcome> {
    let settings = maps::SETTINGS.get(0).ok_or(Outcome::NotForwarding)?;
    if settings.forwarding == 0 {
        return Err(Outcome::NotForwarding);
    }
    let flow_key = F::flow_key(
        packet.src_addr,
        packet.dst_addr,
        packet.src_port,
        packet.dst_port,
        packet.proto,
    );
    // SAFETY: a helper without preconditions; the verifier inlines it to a load.
    let now = unsafe { bpf_jiffies64() };
    if packet.icmp_error {
        return icmp::forward_error::<F>(ctx, packet, &flow_key, settings, now);
    }
    if packet.fragment == parse::Fragment::Later {
        return fragment::forward_later::<F>(ctx, packet, settings, now);
    }

    let (flags, tcp) = (packet.tcp_flags, packet.proto == PROTO_TCP);
    let (vip_id, backend_id, backend, new_flow) =
        match conntrack::lookup::<F>(&flow_key, flags, tcp, settings, now) {
            Lookup::Tracked {
                vip_id,
                backend_id,
                backend,
            } => {
                forwarding(backend.group)?;
                // From the very backend the flow goes to: another director balanced it
                // here (two masters, each tracking the flow to the other). Served locally,
                // never sent back.
                if from_itself(packet.eth, backend) {
                    return Err(Outcome::FromBackend);
                }
                (vip_id, backend_id, backend, false)
            }
            Lookup::Untracked { stale } => {
                // SAFETY: map values are only read; the daemon replaces them whole.
                let vip = unsafe { maps::VIPS.get(flow_key.vip_key()) }.ok_or(Outcome::NotVip)?;
                // Checked before scheduling: a backup director tracks nothing.
                forwarding(vip.group)?;
                from_backend(packet.eth, vip.vip_id)?;
                let (backend_id, backend) =
                    select::schedule::<F>(ctx, vip, &flow_key, flags, settings, now)?;
                let chosen = (backend_id, backend);
                let tracked = conntrack::track::<F>(&flow_key, flags, tcp, stale, chosen, vip, now);
                if tracked {
                    F::announce(settings, &flow_key, backend, FLOW_EVENT_NEW);
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
        fragment::remember::<F>(packet, backend_id, backend, now);
    }
    stats::count_forwarded(vip_id, backend_id, packet.frame_len, new_flow);
    if backend.flags & BACKEND_F_LOCAL != 0 {
        // This director serves the flow itself: its stack holds the VIP.
        return Ok(Outcome::Local);
    }
    forward::rewrite_macs(packet.eth, backend);
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
fn from_itself(eth: *mut EthHdr, backend: &Backend) -> bool {
    let frame = eth as *const u8;
    // SAFETY: `parse` bounds-checked the Ethernet header; the backend entry holds its MAC.
    let (src, dst, mac) = unsafe {
        (
            wire::mac(frame.add(6)),
            wire::mac(frame),
            wire::mac(backend.mac.as_ptr()),
        )
    };
    src == mac && src != dst
}

/// A new flow from a backend of its own VIP was balanced here by another director (a
/// backend holds the VIP and sends it nothing over the wire): the local stack serves it.
/// One inlined array read (`MAC_FILTER`) on new flows, and a hash lookup for the few whose
/// MAC shares a slot with a backend's.
#[inline(always)]
fn from_backend(eth: *mut EthHdr, vip_id: u32) -> Result<(), Outcome> {
    let frame = eth as *const u8;
    // SAFETY: `parse` bounds-checked the Ethernet header.
    let (src, dst) = unsafe { (wire::mac(frame.add(6)), wire::mac(frame)) };
    if src == dst {
        return Ok(());
    }
    // No backend's MAC hashes here: not from a backend.
    match maps::MAC_FILTER.get(mac_filter_slot(src)) {
        Some(&n) if n != 0 => {}
        _ => return Ok(()),
    }
    // The MAC's six bytes in order, then two zero bytes: a `MacKey`.
    let [m0, m1, m2, m3, m4, m5, _, _] = src.to_le_bytes();
    let key = MacKey {
        mac: [m0, m1, m2, m3, m4, m5],
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
