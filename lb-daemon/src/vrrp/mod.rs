//! VRRP (RFC 3768 version 2 for keepalived peers, RFC 5798 version 3), the pure parts:
//!
//! - [`packet`]: adverts on the wire, with the checks the RFCs require on receipt.
//! - [`machine`]: one virtual router's state machine, driven by events and a clock.
//!
//! Not wired into the daemon yet: sockets (raw IP protocol 112, multicast or unicast peers),
//! timers, addresses, gratuitous ARP and the datapath's forwarding switch come next.

pub mod machine;
pub mod packet;
