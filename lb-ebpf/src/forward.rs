//! Direct-routing forward: only the Ethernet addresses change.

use lb_common::Backend;
use network_types::eth::EthHdr;

/// Destination = the backend, source = this director (the frame's old destination, which
/// `parse` checked is this interface's MAC). IP and L4 bytes stay as they are.
#[inline(always)]
pub fn rewrite_macs(eth: *mut EthHdr, backend: &Backend) {
    // SAFETY: `parse` bounds-checked the Ethernet header.
    unsafe {
        (*eth).src_addr = (*eth).dst_addr;
        (*eth).dst_addr = backend.mac;
    }
}
