//! Fragments (IPv4, and IPv6's fragment header). A datagram's first fragment carries the
//! ports: it is balanced as any packet of its flow, and its backend is remembered by the
//! datagram's identity (source, destination, protocol, IP id; for IPv6 the protocol is the
//! fragment header's next header) in the small LRU `FRAGMENTS`. Later fragments carry no
//! ports and follow it. A later fragment whose first was not seen (reordered, or the first
//! went through another director) is placed by the VIP address's ring on (source,
//! destination, protocol), so the fragments of a datagram still meet on one backend, or
//! passed, as `orphan_fragments` says.

use aya_ebpf::{bindings::BPF_ANY, programs::XdpContext};
use lb_common::{
    BACKEND_F_LOCAL, Backend, FlowTuple, FragmentKey, FragmentOwner, FragmentVipKey, IpWords,
    ORPHAN_FRAGMENTS_PASS, RING_SIZE, Settings,
};

use crate::{
    Outcome, conntrack::serving, family::Family, forward, forwarding, maps, parse::Packet, select,
    stats,
};

#[inline(always)]
fn datagram<F: Family>(packet: &Packet<F::Addr>) -> FragmentKey {
    FragmentKey {
        src_addr: F::words(packet.src_addr),
        dst_addr: F::words(packet.dst_addr),
        id: packet.ip_id,
        proto: packet.fragment_proto,
        _pad: [0; 3],
    }
}

/// Remembers where the first fragment of its datagram went.
#[inline(always)]
pub fn remember<F: Family>(packet: &Packet<F::Addr>, backend_id: u32, backend: &Backend, now: u64) {
    let owner = FragmentOwner {
        backend_id,
        backend_generation: backend.generation,
        first_seen: now,
    };
    // A failed insert only sends the later fragments by the orphan rule.
    let _ = maps::FRAGMENTS.insert(&datagram::<F>(packet), &owner, BPF_ANY as u64);
}

/// Remembers that the first fragment of datagram `id` to a VIP address was not forwarded
/// (`backend_id` 0): its later fragments go to the local stack with it. Datagrams to other
/// addresses are not remembered: their later fragments are passed anyway, and their entries
/// would push VIP datagrams out of the LRU.
#[inline(always)]
pub fn remember_passed(src_addr: IpWords, dst_addr: IpWords, id: u32, proto: u8) {
    let vip_address = FragmentVipKey {
        addr: dst_addr,
        proto,
        _pad: [0; 3],
    };
    // SAFETY: map values are only read.
    if unsafe { maps::FRAGMENT_VIPS.get(vip_address) }.is_none() {
        return;
    }
    let key = FragmentKey {
        src_addr,
        dst_addr,
        id,
        proto,
        _pad: [0; 3],
    };
    // SAFETY: a helper without preconditions; the verifier inlines it to a load.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() };
    let owner = FragmentOwner {
        backend_id: 0,
        backend_generation: 0,
        first_seen: now,
    };
    let _ = maps::FRAGMENTS.insert(&key, &owner, BPF_ANY as u64);
}

/// Sends a later fragment where its first fragment went, else by the orphan rule.
#[inline(always)]
pub fn forward_later<F: Family>(
    ctx: &XdpContext,
    packet: &Packet<F::Addr>,
    settings: &Settings,
    now: u64,
) -> Result<Outcome, Outcome> {
    // SAFETY: map values are only read; the datapath writes whole entries.
    let owner = unsafe { maps::FRAGMENTS.get(datagram::<F>(packet)) }
        .filter(|owner| now.saturating_sub(owner.first_seen) <= settings.fragment_timeout);
    // Its first fragment was not forwarded: neither are the others.
    if owner.is_some_and(|owner| owner.backend_id == 0) {
        return Err(Outcome::Fragment);
    }
    let first = owner.and_then(|owner| {
        serving(owner.backend_id, owner.backend_generation).map(|b| (owner.backend_id, b))
    });
    let (backend_id, backend, outcome) = match first {
        Some((backend_id, backend)) => (backend_id, backend, Outcome::TxFragment),
        None => {
            // An orphan: placed by the ring of the VIP address's protocol (an IPv6 one whose
            // fragment header is followed by another extension header has none: passed).
            let vip_key = FragmentVipKey {
                addr: F::words(packet.dst_addr),
                proto: packet.proto,
                _pad: [0; 3],
            };
            // SAFETY: map values are only read; the daemon replaces them whole.
            let vip = unsafe { maps::FRAGMENT_VIPS.get(vip_key) }.ok_or(Outcome::NotVip)?;
            if settings.orphan_fragments == ORPHAN_FRAGMENTS_PASS {
                return Err(Outcome::Fragment);
            }
            forwarding(vip.group)?;
            let three_tuple = F::flow_key(packet.src_addr, packet.dst_addr, 0, 0, packet.proto);
            let slot = (three_tuple.flow_hash() % RING_SIZE as u64) as u32;
            let (backend_id, backend) = select::pick(ctx, vip.vip_id, slot)?;
            (backend_id, backend, Outcome::TxFragmentHashed)
        }
    };
    forwarding(backend.group)?;
    stats::count_forwarded(backend.vip_id, backend_id, packet.frame_len, false);
    if backend.flags & BACKEND_F_LOCAL != 0 {
        return Ok(Outcome::Local);
    }
    forward::rewrite_macs(packet.eth, backend);
    Ok(outcome)
}
