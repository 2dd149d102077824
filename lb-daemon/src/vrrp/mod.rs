//! VRRP (RFC 3768 version 2 for keepalived peers, RFC 5798 version 3): only the master of
//! an instance holds its VIPs and forwards their traffic.
//!
//! - [`packet`]: adverts on the wire, with the checks the RFCs require on receipt (pure).
//! - [`machine`]: one virtual router's state machine, driven by events and a clock (pure).
//! - [`socket`]: the raw protocol-112 socket, gratuitous ARP, the interface's address.
//! - [`addresses`]: the VIPs on the interface, through rtnetlink.
//! - [`router`]: one instance at work, and the order its transitions take.
//! - [`service`]: the thread all instances run on, apart from the daemon's loop.
//! - [`report`]: the state file `lbd status` reads.

pub mod addresses;
pub mod machine;
pub mod packet;
pub mod report;
pub mod router;
pub mod service;
pub mod socket;

pub use router::Request;
pub use service::Vrrp;
