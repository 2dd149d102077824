//! Connection tracking: a flow keeps the backend it was first given, so changing the
//! backend set only moves the flows of backends that left.

use aya_ebpf::bindings::BPF_ANY;
use lb_common::{Backend, FLOW_F_CLOSING, Flow, FlowKey, PROTO_TCP, Settings};

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

#[inline(always)]
pub fn lookup(key: &FlowKey, packet: &Packet, settings: &Settings, now: u64) -> Lookup {
    let Some(flow) = maps::FLOWS.get_ptr_mut(key) else {
        return Lookup::Untracked;
    };
    // SAFETY: `flow` points into the map value; concurrent writers only store whole fields.
    let flow = unsafe { &mut *flow };
    let closing = flow.flags & FLOW_F_CLOSING != 0;
    let timeout = if packet.proto != PROTO_TCP {
        settings.udp_timeout
    } else if closing {
        settings.tcp_fin_timeout
    } else {
        settings.tcp_timeout
    };
    let flags = packet.tcp_flags;
    let expired = now.wrapping_sub(flow.last_seen) > timeout;
    let reopened = closing && flags.syn && !flags.ack;
    if expired || reopened {
        return Lookup::Untracked;
    }
    let Some(backend) = maps::BACKENDS.get(flow.backend_id) else {
        return Lookup::Untracked;
    };
    if !usable(backend) || backend.vip_id != flow.vip_id {
        return Lookup::Untracked;
    }
    let now_closing = flags.fin || flags.rst;
    // Established flows are read-only: refresh the timestamp at most once a second.
    if now.wrapping_sub(flow.last_seen) > settings.touch_interval || (now_closing && !closing) {
        flow.last_seen = now;
        if now_closing {
            flow.flags |= FLOW_F_CLOSING;
        }
    }
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
    // A failed insert only costs a later reschedule to the same Maglev choice.
    let _ = maps::FLOWS.insert(
        key,
        Flow {
            backend_id,
            vip_id,
            flags: closing,
            _pad: 0,
            last_seen: now,
        },
        BPF_ANY as u64,
    );
}
