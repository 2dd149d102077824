//! Flow-state sync: new and closing flows are announced in `FLOW_EVENTS` for the daemon to
//! send to the other directors, so one that takes over forwards every live flow to the real
//! server it already has, even after its ring changed. Off (one load and branch) unless
//! `[sync]` is configured.

use lb_common::{Backend, FLOW_CACHE_SIZE, FlowEvent, FlowKey, Settings};

use crate::maps;

/// Whether a flow refreshed from `previous` to `now` is due to be announced again: when
/// the refresh crosses one of the flow's own period boundaries, offset by its cache slot
/// (`slot` of `FLOW_CACHE_SIZE`), so live flows' refreshes spread over the period instead of
/// all falling in the same second.
#[inline(always)]
pub fn refresh_due(settings: &Settings, previous: u64, now: u64, slot: u32) -> bool {
    let period = settings.sync_refresh;
    if settings.sync_flows == 0 || period == 0 {
        return false;
    }
    let offset = u64::from(slot) * period / u64::from(FLOW_CACHE_SIZE);
    (previous + offset) / period != (now + offset) / period
}

#[inline(always)]
pub fn announce(settings: &Settings, key: &FlowKey, backend: &Backend, kind: u32) {
    if settings.sync_flows == 0 {
        return;
    }
    let event = FlowEvent {
        key: *key,
        // An IPv4 flow's backend: the IPv4 address of its mapped form.
        backend_addr: backend.addr[3],
        kind,
    };
    // A full ring loses the event: the flow then follows the peer's ring on a takeover.
    let _ = maps::FLOW_EVENTS.output(&event, 0);
}
