//! Connection tracking: a flow keeps the backend it was first given, so changing the
//! backend set only moves the flows of backends that left.
//!
//! The LRU hash `FLOWS` is the truth. In front of it, a per-CPU direct-mapped cache holds
//! recently seen established flows: a packet without SYN, FIN or RST whose slot holds its
//! flow, filled within the touch interval, skips the LRU lookup (the costliest step of an
//! established packet). Control packets, closing flows and stale slots consult the LRU,
//! which refills the slot, so the LRU's timestamp is refreshed as before.
//!
//! A flow's packets may be handled on several CPUs (veth, skewed RSS), and each CPU has its
//! own cache. So every (re)schedule bumps the slot's epoch in `FLOW_EPOCHS`, shared by all
//! CPUs, after its LRU insert; a cache entry records the epoch it read before its LRU lookup
//! and is trusted only while the two match. A flow rescheduled on one CPU (port reuse after
//! a close, eviction) is thus never sent to its old backend by another CPU's copy.

use aya_ebpf::bindings::BPF_ANY;
use lb_common::{
    Backend, FLOW_CACHE_SIZE, FLOW_F_CLOSING, Flow, FlowCacheEntry, FlowKey, PROTO_TCP, Settings,
    hash::flow_hash,
};

use crate::{maps, parse::Packet, usable};

pub enum Lookup {
    /// A live entry whose backend is still in service.
    Tracked {
        vip_id: u32,
        backend_id: u32,
        backend: &'static Backend,
    },
    /// No entry, an expired one, a new connection on a closed 5-tuple, or a backend that
    /// was removed (or whose id now serves another VIP): schedule afresh.
    Untracked,
}

/// The flow's backend entry, if it still serves the flow's VIP.
#[inline(always)]
fn serving(backend_id: u32, vip_id: u32) -> Option<&'static Backend> {
    let backend = maps::BACKENDS.get(backend_id)?;
    (usable(backend) && backend.vip_id == vip_id).then_some(backend)
}

#[inline(always)]
fn cache_slot(key: &FlowKey) -> u32 {
    (flow_hash(key) as u32) & (FLOW_CACHE_SIZE - 1)
}

#[inline(always)]
pub fn lookup(key: &FlowKey, packet: &Packet, settings: &Settings, now: u64) -> Lookup {
    let flags = packet.tcp_flags;
    let open_timeout = if packet.proto == PROTO_TCP {
        settings.tcp_timeout
    } else {
        settings.udp_timeout
    };
    let slot = cache_slot(key);
    // Read before the LRU lookup: a reschedule racing with it then leaves a stale epoch.
    let epoch = maps::FLOW_EPOCHS.get(slot).copied().unwrap_or(0);
    let control = flags.syn || flags.fin || flags.rst;
    if !control
        && let Some(cached) = maps::FLOW_CACHE.get(slot)
        && cached.key == *key
        && cached.epoch == epoch
    {
        let age = (now as u32).wrapping_sub(cached.last_seen) as u64;
        if age <= settings.touch_interval
            && age <= open_timeout
            && let Some(backend) = serving(cached.backend_id, cached.vip_id)
        {
            return Lookup::Tracked {
                vip_id: cached.vip_id,
                backend_id: cached.backend_id,
                backend,
            };
        }
    }

    let Some(flow) = maps::FLOWS.get_ptr_mut(key) else {
        return Lookup::Untracked;
    };
    // SAFETY: `flow` points into the map value; concurrent writers only store whole fields.
    let flow = unsafe { &mut *flow };
    let closing = flow.flags & FLOW_F_CLOSING != 0;
    let timeout = if closing && packet.proto == PROTO_TCP {
        settings.tcp_fin_timeout
    } else {
        open_timeout
    };
    // Saturating: another CPU may have stored a newer jiffy than the one read here.
    let age = now.saturating_sub(flow.last_seen);
    let expired = age > timeout;
    let reopened = closing && flags.syn && !flags.ack;
    if expired || reopened {
        return Lookup::Untracked;
    }
    let Some(backend) = serving(flow.backend_id, flow.vip_id) else {
        return Lookup::Untracked;
    };
    let now_closing = flags.fin || flags.rst;
    // Established flows are read-only: refresh the timestamp at most once per interval.
    if age > settings.touch_interval || (now_closing && !closing) {
        flow.last_seen = now;
        if now_closing {
            flow.flags |= FLOW_F_CLOSING;
        }
    }
    remember(slot, key, flow, epoch);
    Lookup::Tracked {
        vip_id: flow.vip_id,
        backend_id: flow.backend_id,
        backend,
    }
}

#[inline(always)]
pub fn track(key: &FlowKey, packet: &Packet, vip_id: u32, backend_id: u32, now: u64) {
    let flags = packet.tcp_flags;
    let closing = if flags.fin || flags.rst {
        FLOW_F_CLOSING
    } else {
        0
    };
    let flow = Flow {
        backend_id,
        vip_id,
        flags: closing,
        _pad: 0,
        last_seen: now,
    };
    // A failed insert only costs a later reschedule to the same Maglev choice.
    let _ = maps::FLOWS.insert(key, flow, BPF_ANY as u64);
    // After the insert: every CPU's cached copy of this slot is now stale. A lost update
    // between two CPUs still changes the value, which is all readers compare.
    if let Some(epoch) = maps::FLOW_EPOCHS.get_ptr_mut(cache_slot(key)) {
        // SAFETY: points into the array's value.
        unsafe { *epoch = (*epoch).wrapping_add(1) };
    }
}

/// Caches an open flow in this CPU's slot under the epoch read before its LRU lookup.
/// Closing flows are not cached: their packets go to the LRU, which times them out sooner.
#[inline(always)]
fn remember(slot: u32, key: &FlowKey, flow: &Flow, epoch: u32) {
    if flow.flags & FLOW_F_CLOSING != 0 {
        return;
    }
    let Some(entry) = maps::FLOW_CACHE.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
    unsafe {
        *entry = FlowCacheEntry {
            key: *key,
            backend_id: flow.backend_id,
            vip_id: flow.vip_id,
            last_seen: flow.last_seen as u32,
            epoch,
        }
    };
}
