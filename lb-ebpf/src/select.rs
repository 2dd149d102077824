//! Backend selection for a new flow: persistence first, then the VIP's scheduler. Every
//! scheduler reads the VIP's ring, which the daemon precomputes for it (a Maglev table for
//! the hashing and least-connection schedulers, an interleaved weighted sequence for round
//! robin), so the datapath only indexes it.
//!
//! - maglev: slot = hash of the 5-tuple; sh: of the client address; dh: of the VIP address.
//! - rr, wrr: slot = the VIP's position, one per CPU (no shared cache line, no atomics), each
//!   CPU starting at its own offset: every CPU walks the whole sequence, so the spread is
//!   even over all of them.
//! - lc, wlc: the less loaded of the backends at two independent hash slots ("power of two
//!   choices"): `BACKEND_ACTIVE` counts, for wlc relative to weight. Reading every backend
//!   would cost a loop per new flow; two choices keep the spread close to even, and CPUs
//!   deciding at once cannot all pile onto one backend, as a shared "current minimum" would.
//!
//! Schedulers that are not a function of the flow (rr, wrr, lc, wlc) remember a bare SYN's
//! choice in `HALF_OPEN` for its handshake's ACK, which is when the flow is tracked; with
//! persistence, the client's template (`PERSIST`, created at the first packet) does that.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_get_smp_processor_id, programs::XdpContext};
use aya_log_ebpf::warn;
use lb_common::{
    Backend, Choice, FlowTuple, PersistKey, RING_SIZE, SCHED_DH, SCHED_LC, SCHED_RR, SCHED_SH,
    SCHED_WLC, SCHED_WRR, Settings, VipInfo, hash::mix64, masked,
};

use crate::{Outcome, conntrack::serving, family::Family, maps, parse::TcpFlags, usable};

/// Where each CPU starts in a round-robin sequence (a prime far from the ring's size).
const CPU_OFFSET: u64 = 7_919;

/// Whether a scheduler's choice depends on more than the flow (so a handshake must
/// remember it).
#[inline(always)]
pub fn stateful(scheduler: u32) -> bool {
    matches!(scheduler, SCHED_RR | SCHED_WRR | SCHED_LC | SCHED_WLC)
}

/// Whether flows of the VIP are counted in `BACKEND_ACTIVE`.
#[inline(always)]
pub fn counts_flows(scheduler: u32) -> bool {
    matches!(scheduler, SCHED_LC | SCHED_WLC)
}

/// The backend for a flow without a usable entry: its client's template, its handshake's
/// remembered choice, else the scheduler's (which a template or `HALF_OPEN` then keeps).
#[inline(always)]
pub fn schedule<F: Family>(
    ctx: &XdpContext,
    vip: &VipInfo,
    key: &F::Key,
    flags: TcpFlags,
    settings: &Settings,
    now: u64,
) -> Result<(u32, &'static Backend), Outcome> {
    if let Some(found) = recall::<F>(vip, key, settings, now, Some(settings.touch_interval)) {
        return Ok(found);
    }
    let chosen = by_scheduler(ctx, vip, key, true)?;
    if vip.persist_timeout != 0 {
        remember(&maps::PERSIST, &client_of(vip, key), chosen, now);
    } else if stateful(vip.scheduler) && flags.syn && !flags.ack {
        remember(F::half_open(), key, chosen, now);
    }
    Ok(chosen)
}

/// The choice remembered for the flow: its client's template on a persistent VIP, else its
/// handshake's on a stateful scheduler (an entry that lives as long as a closing flow
/// would); refreshed when older than `touch` (never with `None`).
#[inline(always)]
fn recall<F: Family>(
    vip: &VipInfo,
    key: &F::Key,
    settings: &Settings,
    now: u64,
    touch: Option<u64>,
) -> Option<(u32, &'static Backend)> {
    if vip.persist_timeout != 0 {
        let client = client_of(vip, key);
        remembered(
            maps::PERSIST.get_ptr_mut(&client),
            vip.persist_timeout,
            touch,
            now,
        )
    } else if stateful(vip.scheduler) {
        remembered(
            F::half_open().get_ptr_mut(key),
            settings.tcp_fin_timeout,
            touch,
            now,
        )
    } else {
        None
    }
}

/// A persistent VIP's flow is alive (its timestamp was just refreshed, at most once per touch
/// interval): so is its client's template, as IPVS keeps a template while connections it
/// placed are in use. Two hash lookups, once a second per flow of a persistent VIP.
#[inline(always)]
pub fn keep_persistence<K: FlowTuple>(key: &K, now: u64) {
    // SAFETY: map values are only read; the daemon replaces them whole.
    let Some(vip) = (unsafe { maps::VIPS.get(key.vip_key()) }) else {
        return;
    };
    let client = client_of(vip, key);
    if let Some(template) = maps::PERSIST.get_ptr_mut(&client) {
        // SAFETY: a pointer into the map value; a whole-field store.
        unsafe { (*template).last_seen = now };
    }
}

/// Where an untracked flow went or would go, without changing anything (for an ICMP error
/// about it): its client's template, its handshake's choice, else the scheduler's, except
/// that a round-robin VIP's position is not advanced (the flow hash picks instead).
#[inline(always)]
pub fn owner<F: Family>(
    ctx: &XdpContext,
    vip: &VipInfo,
    key: &F::Key,
    settings: &Settings,
    now: u64,
) -> Result<(u32, &'static Backend), Outcome> {
    match recall::<F>(vip, key, settings, now, None) {
        Some(found) => Ok(found),
        None => by_scheduler(ctx, vip, key, false),
    }
}

/// The persistence template key of the flow's client: its VIP and masked address.
#[inline(always)]
fn client_of<K: FlowTuple>(vip: &VipInfo, key: &K) -> PersistKey {
    PersistKey {
        vip_id: vip.vip_id,
        client: masked(&key.client(), &vip.persist_mask),
    }
}

/// A remembered choice younger than `timeout` whose backend still serves; its age is
/// refreshed when older than `touch` (never with `None`).
#[inline(always)]
fn remembered(
    entry: Option<*mut Choice>,
    timeout: u64,
    touch: Option<u64>,
    now: u64,
) -> Option<(u32, &'static Backend)> {
    // SAFETY: a pointer into the map value; concurrent writers store whole fields.
    let entry = unsafe { &mut *entry? };
    let age = now.saturating_sub(entry.last_seen);
    if age > timeout {
        return None;
    }
    let backend = serving(entry.backend_id, entry.backend_generation)?;
    if touch.is_some_and(|interval| age > interval) {
        entry.last_seen = now;
    }
    Some((entry.backend_id, backend))
}

#[inline(always)]
fn remember<K>(
    map: &aya_ebpf::btf_maps::LruHashMap<K, Choice, 65_536>,
    key: &K,
    (backend_id, backend): (u32, &Backend),
    now: u64,
) {
    let choice = Choice {
        backend_id,
        backend_generation: backend.generation,
        last_seen: now,
    };
    // A failed insert only forgets the choice: the next packet is scheduled again.
    let _ = map.insert(key, &choice, BPF_ANY as u64);
}

/// The scheduler's choice; `advance`: a round-robin VIP moves on (else the flow hash picks
/// in its sequence, changing nothing).
#[inline(always)]
fn by_scheduler<K: FlowTuple>(
    ctx: &XdpContext,
    vip: &VipInfo,
    key: &K,
    advance: bool,
) -> Result<(u32, &'static Backend), Outcome> {
    let hash = match vip.scheduler {
        SCHED_SH => key.source_hash(),
        SCHED_DH => key.destination_hash(),
        SCHED_RR | SCHED_WRR if advance => {
            let position = maps::SCHED_POSITION
                .get_ptr_mut(vip.vip_id)
                .ok_or(Outcome::NoBackend)?;
            // SAFETY: this CPU's slot; only this CPU writes it while this program runs.
            let position = unsafe {
                *position += 1;
                *position
            };
            // Each CPU walks the whole sequence from its own starting point.
            // SAFETY: a helper without preconditions.
            position + unsafe { bpf_get_smp_processor_id() } as u64 * CPU_OFFSET
        }
        SCHED_LC | SCHED_WLC => {
            let hash = key.flow_hash();
            let first = pick(ctx, vip.vip_id, (hash % RING_SIZE as u64) as u32)?;
            let second = pick(ctx, vip.vip_id, (mix64(hash) % RING_SIZE as u64) as u32)?;
            return Ok(less_loaded(vip.scheduler, first, second));
        }
        _ => key.flow_hash(),
    };
    pick(ctx, vip.vip_id, (hash % RING_SIZE as u64) as u32)
}

/// The backend with fewer open flows (for wlc, per unit of weight); the first on a tie.
#[inline(always)]
fn less_loaded(
    scheduler: u32,
    a: (u32, &'static Backend),
    b: (u32, &'static Backend),
) -> (u32, &'static Backend) {
    let active = |id: u32| maps::BACKEND_ACTIVE.get(id).copied().unwrap_or(0) as i64;
    // Late decrements may take a count below 0 for a moment: read as signed, floored.
    let (load_a, load_b) = (active(a.0).max(0) as u64, active(b.0).max(0) as u64);
    let b_is_lighter = if scheduler == SCHED_WLC {
        load_b * (a.1.weight.max(1) as u64) < load_a * (b.1.weight.max(1) as u64)
    } else {
        load_b < load_a
    };
    if b_is_lighter { b } else { a }
}

/// The backend at `slot` of the VIP's ring.
#[inline(always)]
pub fn pick(ctx: &XdpContext, vip_id: u32, slot: u32) -> Result<(u32, &'static Backend), Outcome> {
    let slot = vip_id.wrapping_mul(RING_SIZE).wrapping_add(slot);
    let backend_id = *maps::RING.get(slot).ok_or(Outcome::NoBackend)?;
    // 0: the VIP has no backend with a positive weight (the daemon warns about that).
    if backend_id == 0 {
        return Err(Outcome::NoBackend);
    }
    let backend = maps::BACKENDS.get(backend_id).ok_or(Outcome::NoBackend)?;
    if !usable(backend) || backend.vip_id != vip_id {
        // The daemon rewrites rings before retiring a backend; seeing this means it did not.
        warn!(
            ctx,
            "ring of vip {} points at retired backend {}", vip_id, backend_id
        );
        return Err(Outcome::NoBackend);
    }
    Ok((backend_id, backend))
}
