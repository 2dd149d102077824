//! Installs the flows another director announced, each to its backend (found by address),
//! with what its VIP's scheduler keeps about it: a least-connection VIP's open-flow count
//! and a persistent VIP's client template. A failover then keeps lc/wlc balanced and
//! persistent clients on their backends, as keepalived's sync daemon keeps IPVS templates.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{
    Choice, FLOW_EVENT_CLOSING, FLOW_F_CLOSING, FLOW_F_COUNTED, FLOW_F_PERSISTENT, Flow, FlowEvent,
    FlowTuple, PROTO_TCP, PersistKey, SCHED_LC, SCHED_WLC, masked,
};

use crate::{dataplane::writer::MapWriter, error::Result, reconcile::Reconciler};

/// What became of a batch of announced flows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Installed {
    pub installed: u64,
    /// Flows to a backend (or VIP) this director does not have.
    pub skipped: u64,
}

/// Installs `events` (jiffies `now` as their last sight).
pub fn install(
    writer: &mut MapWriter<'_>,
    reconciler: &Reconciler,
    events: &[FlowEvent],
    now: u64,
) -> Result<Installed> {
    let mut done = Installed::default();
    for event in events {
        let vip = event.key.vip_key();
        let addr = IpAddr::V4(Ipv4Addr::from(event.backend_addr.to_ne_bytes()));
        let (Some((vip_id, backend_id, generation)), Some(selection)) = (
            reconciler.flow_target(&vip, addr),
            reconciler.selection(&vip),
        ) else {
            done.skipped += 1;
            continue;
        };
        let closing = event.kind == FLOW_EVENT_CLOSING;
        // Counted while open, once: a refresh of a counted flow changes nothing.
        let counted = matches!(selection.scheduler, SCHED_LC | SCHED_WLC)
            && !closing
            && event.key.proto == PROTO_TCP;
        if let Some(old) = writer.flow(&event.key)?
            && old.flags & FLOW_F_COUNTED != 0
        {
            writer.add_active(old.backend_id, -1)?;
        }
        if counted {
            writer.add_active(backend_id, 1)?;
        }
        let persistent = selection.persist_timeout != 0;
        let flow = Flow {
            backend_id,
            vip_id,
            flags: if closing { FLOW_F_CLOSING } else { 0 }
                | if counted { FLOW_F_COUNTED } else { 0 }
                | if persistent { FLOW_F_PERSISTENT } else { 0 },
            backend_generation: generation,
            last_seen: now,
        };
        writer.install_flow(&event.key, &flow)?;
        if persistent && !closing {
            let client = PersistKey {
                vip_id,
                client: masked(&event.key.client(), &selection.persist_mask),
            };
            let choice = Choice {
                backend_id,
                backend_generation: generation,
                last_seen: now,
            };
            writer.set_template(&client, &choice)?;
        }
        done.installed += 1;
    }
    Ok(done)
}
