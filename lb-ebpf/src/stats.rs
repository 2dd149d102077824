//! Per-CPU counters: no atomics needed, the daemon sums the CPUs.

use crate::{Outcome, maps};

#[inline(always)]
pub fn count_outcome(outcome: Outcome) {
    let Some(counters) = maps::VERDICTS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
    let c = unsafe { &mut *counters };
    match outcome {
        Outcome::Tx => c.tx += 1,
        Outcome::TxIcmpError => c.tx_icmp_error += 1,
        Outcome::TxFragment => c.tx_fragment += 1,
        Outcome::TxFragmentHashed => c.tx_fragment_hashed += 1,
        Outcome::NotForUs => c.pass_not_for_us += 1,
        Outcome::NotBalanced => c.pass_not_balanced += 1,
        Outcome::NotVip => c.pass_not_vip += 1,
        Outcome::Fragment => c.pass_fragment += 1,
        Outcome::NotForwarding => c.pass_not_forwarding += 1,
        Outcome::Local => c.pass_local += 1,
        Outcome::FromBackend => c.pass_from_backend += 1,
        Outcome::Malformed => c.drop_malformed += 1,
        Outcome::NoBackend => c.drop_no_backend += 1,
    }
}

#[inline(always)]
pub fn count_forwarded(vip_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    for counters in [
        maps::VIP_STATS.get_ptr_mut(vip_id),
        maps::BACKEND_STATS.get_ptr_mut(backend_id),
    ] {
        let Some(counters) = counters else { continue };
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        let c = unsafe { &mut *counters };
        c.packets += 1;
        c.bytes += bytes;
        c.new_flows += new_flow as u64;
    }
}
