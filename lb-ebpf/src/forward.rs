//! Direct-routing forward: only the Ethernet addresses change.

use lb_common::Backend;

use crate::parse::Packet;

/// Destination = the backend, source = this director (the frame's old destination, which
/// `parse` checked is this interface's MAC). IP and L4 bytes stay as they are.
#[inline(always)]
pub fn rewrite_macs(packet: &Packet, backend: &Backend) {
    // SAFETY: `parse` bounds-checked the Ethernet header.
    unsafe {
        (*packet.eth).src_addr = (*packet.eth).dst_addr;
        (*packet.eth).dst_addr = backend.mac;
    }
}
