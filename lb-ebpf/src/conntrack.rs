//! Connection tracking: a flow keeps the backend it was first given, so changing the
//! backend set only moves the flows of backends that left. A TCP flow is tracked from the
//! client's first packet after its bare SYN (see `track`): spoofed SYNs cannot fill the table.
//!
//! The LRU hash `FLOWS` is the truth. In front of it, a per-CPU direct-mapped cache holds
//! recently seen established flows: a packet without SYN, FIN or RST whose slot holds its
//! flow, filled within the touch interval, skips the LRU lookup (the costliest step of an
//! established packet). Control packets, closing flows and stale slots consult the LRU,
//! which refills the slot, so the LRU's timestamp is refreshed as before.
//!
//! Identity: a flow records its backend's id and generation. The daemon reuses ids (of
//! backends and of VIPs) and gives every allocation a new generation, so a flow is trusted
//! only while its backend entry is active with the same generation; otherwise it is
//! scheduled afresh by the VIP it is addressed to (or passed when that is no VIP).
//!
//! A flow's packets may be handled on several CPUs (veth, skewed RSS), and each CPU has its
//! own cache. So every (re)schedule atomically adds 1 to the slot's epoch in `FLOW_EPOCHS`,
//! shared by all CPUs, after its LRU insert; a cache entry records the epoch it read before
//! its LRU lookup and is trusted only while the two match. The add is atomic because a lost
//! update could move the epoch back to a value some CPU's copy still carries. A flow
//! rescheduled on one CPU (port reuse after a close, eviction) is thus never sent to its old
//! backend by another CPU's copy.
//!
//! Ordering relied on: the writer's LRU insert (a helper call that publishes the element)
//! precedes its epoch add, a lock-prefixed full barrier on x86-64; the reader loads the
//! epoch before calling the LRU lookup, and x86-64 does not reorder loads with loads. A
//! reader that saw the old epoch but the new element caches it under the old epoch, which
//! the next packet finds stale.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::BPF_ANY;
use lb_common::{
    Backend, FLOW_CACHE_SIZE, FLOW_EVENT_CLOSING, FLOW_EVENT_NEW, FLOW_F_CLOSING, FLOW_F_COUNTED,
    FLOW_F_PERSISTENT, Flow, FlowTuple, PROTO_TCP, Settings, VipInfo,
};

use crate::{family::Family, maps, parse::TcpFlags, select, usable};

pub enum Lookup {
    /// A live entry whose backend is still in service.
    Tracked {
        vip_id: u32,
        backend_id: u32,
        backend: &'static Backend,
    },
    /// No entry, an expired one, a new connection on a closed 5-tuple, or a backend that
    /// was removed (or whose id was given to another backend since): schedule afresh.
    /// `stale` is the entry to overwrite in place when there is one.
    Untracked { stale: Option<&'static mut Flow> },
}

/// How often a live flow's `last_seen` is refreshed (and how long a cached copy is trusted):
/// the touch interval, or half the flow's timeout when that is shorter, so a flow whose
/// packets come more often than its timeout never looks expired (a 1 s timeout with a 1 s
/// interval would expire a flow sending every 0.6 s).
#[inline(always)]
fn touch_interval(settings: &Settings, timeout: u64) -> u64 {
    settings.touch_interval.min(timeout / 2)
}

/// The flow's backend entry, if it is still the allocation the flow was scheduled to.
#[inline(always)]
pub fn serving(backend_id: u32, generation: u32) -> Option<&'static Backend> {
    let backend = maps::BACKENDS.get(backend_id)?;
    (usable(backend) && backend.generation == generation).then_some(backend)
}

#[inline(always)]
fn cache_slot<K: FlowTuple>(key: &K) -> u32 {
    (key.flow_hash() as u32) & (FLOW_CACHE_SIZE - 1)
}

#[inline(always)]
pub fn lookup<F: Family>(
    key: &F::Key,
    flags: TcpFlags,
    tcp: bool,
    settings: &Settings,
    now: u64,
) -> Lookup {
    let slot = cache_slot(key);
    // Read before the LRU lookup: a reschedule racing with it then leaves a stale epoch.
    // The low 32 bits suffice (a copy would need 2^32 reschedules in one slot to match
    // again), read as the u64's first word (BPF is little-endian here), saving a truncation.
    let epoch = maps::FLOW_EPOCHS
        .get(slot)
        // SAFETY: the first 4 bytes of an aligned u64 inside the array's value.
        .map_or(0, |e| unsafe { *(e as *const u64 as *const u32) });
    let control = flags.syn || flags.fin || flags.rst;
    if !control && let Some((backend_id, generation, last_seen)) = F::cached(slot, key, epoch) {
        let age = (now as u32).wrapping_sub(last_seen) as u64;
        if age <= settings.touch_interval
            && let Some(backend) = serving(backend_id, generation)
            && age <= touch_interval(settings, backend.timeout(settings, tcp, false))
        {
            return Lookup::Tracked {
                vip_id: backend.vip_id,
                backend_id,
                backend,
            };
        }
    }

    let Some(flow) = F::flows().get_ptr_mut(key) else {
        return Lookup::Untracked { stale: None };
    };
    // SAFETY: `flow` points into the map value; concurrent writers only store whole fields.
    let flow = unsafe { &mut *flow };
    let closing = flow.flags & FLOW_F_CLOSING != 0;
    let Some(backend) = serving(flow.backend_id, flow.backend_generation) else {
        return Lookup::Untracked { stale: Some(flow) };
    };
    // Saturating: another CPU may have stored a newer jiffy than the one read here.
    let age = now.saturating_sub(flow.last_seen);
    let timeout = backend.timeout(settings, tcp, closing);
    let expired = age > timeout;
    let reopened = closing && flags.syn && !flags.ack;
    if expired || reopened {
        return Lookup::Untracked { stale: Some(flow) };
    }
    let now_closing = flags.fin || flags.rst;
    // Established flows are read-only: refresh the timestamp at most once per interval.
    if age > touch_interval(settings, timeout) || (now_closing && !closing) {
        let previous = flow.last_seen;
        flow.last_seen = now;
        if flow.flags & FLOW_F_PERSISTENT != 0 {
            select::keep_persistence(key, now);
        }
        if now_closing && !closing {
            uncount(flow);
            flow.flags |= FLOW_F_CLOSING;
            F::announce(settings, key, backend, FLOW_EVENT_CLOSING);
        } else if crate::sync::refresh_due(settings, previous, now, slot) {
            // The peers' copies age without packets: tell them it is still in use.
            let kind = if closing {
                FLOW_EVENT_CLOSING
            } else {
                FLOW_EVENT_NEW
            };
            F::announce(settings, key, backend, kind);
        }
    }
    // Closing flows are not cached: their packets go to the LRU, which times them out sooner.
    if flow.flags & FLOW_F_CLOSING == 0 {
        F::cache(slot, key, flow, epoch);
    }
    Lookup::Tracked {
        vip_id: backend.vip_id,
        backend_id: flow.backend_id,
        backend,
    }
}

/// The backend a live tracked flow goes to, read-only: for packets about a flow that are
/// not of it (ICMP errors), which must neither refresh nor cache it.
#[inline(always)]
pub fn owner<F: Family>(key: &F::Key, settings: &Settings, now: u64) -> Option<&'static Backend> {
    let flow = F::flows().get_ptr(key)?;
    // SAFETY: `flow` points into the map value; concurrent writers only store whole fields.
    let flow = unsafe { &*flow };
    let backend = serving(flow.backend_id, flow.backend_generation)?;
    let closing = flow.flags & FLOW_F_CLOSING != 0;
    let timeout = backend.timeout(settings, key.proto() == PROTO_TCP, closing);
    (now.saturating_sub(flow.last_seen) <= timeout).then_some(backend)
}

/// Records a flow's backend, or not: a client's bare SYN without an entry is scheduled
/// statelessly (the ring gives its first ACK the same backend), so a flood of spoofed SYNs,
/// which never ACK, cannot evict established flows or fill the table. Any other packet is
/// tracked, in place when its 5-tuple has a stale entry (a new connection on a closed
/// tuple, an expired flow): the table does not grow. Either way the slot's epoch is bumped:
/// a CPU may still cache an earlier flow of this 5-tuple that has left the LRU, and the
/// handshake's ACK must follow the SYN, not that copy. Returns whether the flow is tracked.
#[inline(always)]
pub fn track<F: Family>(
    key: &F::Key,
    flags: TcpFlags,
    tcp: bool,
    stale: Option<&'static mut Flow>,
    (backend_id, backend): (u32, &Backend),
    vip: &VipInfo,
    now: u64,
) -> bool {
    let closing = if flags.fin || flags.rst {
        FLOW_F_CLOSING
    } else {
        0
    };
    // A least-connection VIP's flow counts on its backend while open.
    // TCP only: a UDP flow has no end to count down at (the config refuses lc on UDP).
    let counted = select::counts_flows(vip.scheduler) && closing == 0 && tcp;
    let persistent = if vip.persist_timeout != 0 {
        FLOW_F_PERSISTENT
    } else {
        0
    };
    let flow = Flow {
        backend_id,
        vip_id: backend.vip_id,
        flags: closing | persistent | if counted { FLOW_F_COUNTED } else { 0 },
        backend_generation: backend.generation,
        last_seen: now,
    };
    let tracked = match stale {
        // Another CPU reading it meanwhile sees a mix of old and new fields, which fails
        // `serving` (generations are never reused) and reschedules to the same choice.
        Some(entry) => {
            uncount(entry);
            *entry = flow;
            true
        }
        None if tcp && flags.syn && !flags.ack => false,
        // A failed insert only costs a later reschedule to the same Maglev choice.
        None => {
            let _ = F::flows().insert(key, flow, BPF_ANY as u64);
            true
        }
    };
    if tracked && counted {
        add_active(backend_id, 1);
    }
    // After the write: every CPU's cached copy of this slot is now stale. Atomic, so two
    // CPUs bumping at once never leave the epoch at a value a stale copy carries.
    if let Some(epoch) = maps::FLOW_EPOCHS.get_ptr_mut(cache_slot(key)) {
        // SAFETY: an aligned u64 inside the array's value, which lives as long as the map;
        // the load in `lookup` is one aligned load. The intrinsic, because core's atomic
        // types have no read-modify-write on the BPF target; it compiles to BPF's atomic add.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(epoch, 1) };
    }
    tracked
}

/// Takes a counted open flow off its backend's count (once: the flag goes), unless the
/// backend was retired since (its count is reset when the id is given out again) or the entry
/// is another allocation by now.
#[inline(always)]
fn uncount(flow: &mut Flow) {
    if flow.flags & FLOW_F_COUNTED == 0 {
        return;
    }
    flow.flags &= !FLOW_F_COUNTED;
    if serving(flow.backend_id, flow.backend_generation).is_some() {
        add_active(flow.backend_id, u64::MAX); // -1
    }
}

/// Adds `delta` (wrapping: `u64::MAX` is -1) to a backend's open-flow count, atomically.
#[inline(always)]
fn add_active(backend_id: u32, delta: u64) {
    if let Some(count) = maps::BACKEND_ACTIVE.get_ptr_mut(backend_id) {
        // SAFETY: an aligned u64 inside the array's value; see the epoch bump in `track`.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, delta) };
    }
}
