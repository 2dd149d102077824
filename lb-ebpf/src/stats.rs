//! Per-CPU counters: no atomics needed, the daemon sums the CPUs.

use lb_common::VerdictCounters;

use crate::{Outcome, maps};

#[inline(always)]
pub fn count_outcome(outcome: Outcome) {
    let Some(counters) = maps::VERDICTS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this CPU writes it while this program runs; the outcome's
    // index is its field's (checked below), within the record.
    unsafe { *(counters as *mut u64).add(outcome as usize) += 1 };
}

/// `Outcome`'s order is `VerdictCounters`' field order: counting is one indexed add.
const _: () = {
    use core::mem::{offset_of, size_of};
    const fn at(outcome: Outcome) -> usize {
        outcome as usize * size_of::<u64>()
    }
    assert!(size_of::<VerdictCounters>() == (Outcome::NoBackend as usize + 1) * size_of::<u64>());
    assert!(offset_of!(VerdictCounters, tx) == at(Outcome::Tx));
    assert!(offset_of!(VerdictCounters, tx_icmp_error) == at(Outcome::TxIcmpError));
    assert!(offset_of!(VerdictCounters, tx_fragment) == at(Outcome::TxFragment));
    assert!(offset_of!(VerdictCounters, tx_fragment_hashed) == at(Outcome::TxFragmentHashed));
    assert!(offset_of!(VerdictCounters, pass_not_for_us) == at(Outcome::NotForUs));
    assert!(offset_of!(VerdictCounters, pass_not_balanced) == at(Outcome::NotBalanced));
    assert!(offset_of!(VerdictCounters, pass_not_vip) == at(Outcome::NotVip));
    assert!(offset_of!(VerdictCounters, pass_fragment) == at(Outcome::Fragment));
    assert!(offset_of!(VerdictCounters, pass_not_forwarding) == at(Outcome::NotForwarding));
    assert!(offset_of!(VerdictCounters, pass_local) == at(Outcome::Local));
    assert!(offset_of!(VerdictCounters, pass_from_backend) == at(Outcome::FromBackend));
    assert!(offset_of!(VerdictCounters, drop_malformed) == at(Outcome::Malformed));
    assert!(offset_of!(VerdictCounters, drop_no_backend) == at(Outcome::NoBackend));
};

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
