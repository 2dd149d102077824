//! The address family a packet is in. The datapath is one generic path over [`Family`]:
//! IPv4 and IPv6 share every table except those keyed by the flow (the flow table, its
//! per-CPU cache and the handshake table), which each family has its own of so an IPv4
//! key stays 16 bytes and its established path pays nothing for IPv6.

use aya_ebpf::btf_maps::LruHashMap;
use lb_common::{
    Backend, Choice, DEFAULT_MAX_FLOWS, Flow, FlowCacheEntry, FlowCacheEntry6, FlowKey, FlowKey6,
    FlowTuple, IpWords, MAX_HALF_OPEN, Settings, ipv4_mapped,
};

use crate::maps;

/// A cached flow: `(backend id, backend generation, last seen)`.
pub type Cached = (u32, u32, u32);

pub trait Family {
    /// An address as the packet carries it, in wire order.
    type Addr: Copy;
    /// The flow table's key.
    type Key: FlowTuple + 'static;

    fn flow_key(
        src: Self::Addr,
        dst: Self::Addr,
        src_port: u16,
        dst_port: u16,
        proto: u8,
    ) -> Self::Key;
    /// The address as shared tables key it.
    fn words(addr: Self::Addr) -> IpWords;
    fn flows() -> &'static LruHashMap<Self::Key, Flow, { DEFAULT_MAX_FLOWS as usize }>;
    fn half_open() -> &'static LruHashMap<Self::Key, Choice, { MAX_HALF_OPEN as usize }>;
    /// This CPU's cached copy in `slot`, when it holds `key` under `epoch`.
    fn cached(slot: u32, key: &Self::Key, epoch: u32) -> Option<Cached>;
    /// Fills this CPU's cache `slot`.
    fn cache(slot: u32, key: &Self::Key, flow: &Flow, epoch: u32);
    /// Announces a flow event to the other directors (`[sync]`), where the family has one.
    fn announce(settings: &Settings, key: &Self::Key, backend: &Backend, kind: u32);
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    type Addr = u32;
    type Key = FlowKey;

    #[inline(always)]
    fn flow_key(src: u32, dst: u32, src_port: u16, dst_port: u16, proto: u8) -> FlowKey {
        FlowKey {
            src_addr: src,
            dst_addr: dst,
            src_port,
            dst_port,
            proto,
            _pad0: 0,
            _pad1: 0,
        }
    }

    #[inline(always)]
    fn words(addr: u32) -> IpWords {
        ipv4_mapped(addr)
    }

    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKey, Flow, { DEFAULT_MAX_FLOWS as usize }> {
        &maps::FLOWS
    }

    #[inline(always)]
    fn half_open() -> &'static LruHashMap<FlowKey, Choice, { MAX_HALF_OPEN as usize }> {
        &maps::HALF_OPEN
    }

    #[inline(always)]
    fn cached(slot: u32, key: &FlowKey, epoch: u32) -> Option<Cached> {
        let entry = maps::FLOW_CACHE.get(slot)?;
        (entry.key == *key && entry.epoch == epoch).then_some((
            entry.backend_id,
            entry.backend_generation,
            entry.last_seen,
        ))
    }

    #[inline(always)]
    fn cache(slot: u32, key: &FlowKey, flow: &Flow, epoch: u32) {
        let Some(entry) = maps::FLOW_CACHE.get_ptr_mut(slot) else {
            return;
        };
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            *entry = FlowCacheEntry {
                key: *key,
                backend_id: flow.backend_id,
                backend_generation: flow.backend_generation,
                last_seen: flow.last_seen as u32,
                epoch,
            }
        };
    }

    #[inline(always)]
    fn announce(settings: &Settings, key: &FlowKey, backend: &Backend, kind: u32) {
        crate::sync::announce(settings, key, backend, kind);
    }
}

impl Family for V6 {
    type Addr = IpWords;
    type Key = FlowKey6;

    #[inline(always)]
    fn flow_key(src: IpWords, dst: IpWords, src_port: u16, dst_port: u16, proto: u8) -> FlowKey6 {
        FlowKey6 {
            src_addr: src,
            dst_addr: dst,
            src_port,
            dst_port,
            proto,
            _pad0: 0,
            _pad1: 0,
        }
    }

    #[inline(always)]
    fn words(addr: IpWords) -> IpWords {
        addr
    }

    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKey6, Flow, { DEFAULT_MAX_FLOWS as usize }> {
        &maps::FLOWS6
    }

    #[inline(always)]
    fn half_open() -> &'static LruHashMap<FlowKey6, Choice, { MAX_HALF_OPEN as usize }> {
        &maps::HALF_OPEN6
    }

    #[inline(always)]
    fn cached(slot: u32, key: &FlowKey6, epoch: u32) -> Option<Cached> {
        let entry = maps::FLOW_CACHE6.get(slot)?;
        (entry.key == *key && entry.epoch == epoch).then_some((
            entry.backend_id,
            entry.backend_generation,
            entry.last_seen,
        ))
    }

    #[inline(always)]
    fn cache(slot: u32, key: &FlowKey6, flow: &Flow, epoch: u32) {
        let Some(entry) = maps::FLOW_CACHE6.get_ptr_mut(slot) else {
            return;
        };
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            *entry = FlowCacheEntry6 {
                key: *key,
                backend_id: flow.backend_id,
                backend_generation: flow.backend_generation,
                last_seen: flow.last_seen as u32,
                epoch,
            }
        };
    }

    /// IPv6 flows are not synced yet: a director that takes over places them by its ring.
    #[inline(always)]
    fn announce(_: &Settings, _: &FlowKey6, _: &Backend, _: u32) {}
}
