//! Backend selection: one read of the VIP's precomputed Maglev ring.

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::warn;
use lb_common::{Backend, FlowKey, RING_SIZE, hash::ring_slot};

use crate::{Outcome, maps, usable};

#[inline(always)]
pub fn pick(
    ctx: &XdpContext,
    vip_id: u32,
    key: &FlowKey,
) -> Result<(u32, &'static Backend), Outcome> {
    let slot = vip_id.wrapping_mul(RING_SIZE).wrapping_add(ring_slot(key));
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
