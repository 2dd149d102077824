//! Direct-routing forward: only the Ethernet addresses change.

use lb_common::Backend;
use network_types::eth::EthHdr;

use crate::wire;

/// Destination = the backend, source = this director (the frame's old destination, which
/// `parse` checked is this interface's MAC). IP and L4 bytes stay as they are.
#[inline(always)]
pub fn rewrite_macs(eth: *mut EthHdr, backend: &Backend) {
    let frame = eth as *mut u8;
    // SAFETY: `parse` bounds-checked the Ethernet header; the backend entry holds its MAC.
    unsafe {
        wire::set_mac(frame.add(6), wire::mac(frame));
        wire::set_mac(frame, wire::mac(backend.mac.as_ptr()));
    }
}
