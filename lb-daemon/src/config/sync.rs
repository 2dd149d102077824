//! `[sync]`: flow-state sync between directors (keepalived's `lvs_sync_daemon`).

use std::net::Ipv4Addr;

use super::{
    validate::{ipv4, ipv4_list},
    walk::{Problems, Table},
};

/// Where this director sends its new and closing flows, and from whom it takes theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// The other directors; datagrams from any other address are dropped.
    pub peers: Vec<Ipv4Addr>,
    /// UDP port, the same on every director.
    pub port: u16,
    /// Address to send from and listen on (default: any).
    pub source: Option<Ipv4Addr>,
}

/// The default sync port.
pub const SYNC_PORT: u16 = 8848;

pub fn sync(root: &Table<'_>, p: &mut Problems) -> Option<SyncConfig> {
    let t = root.table("sync", "sync", p)?;
    t.only(&["peers", "port", "source"], p);
    let before = p.len();
    let peers = ipv4_list(&t, "peers", "peer", p);
    if t.get("peers").is_none() {
        p.add(
            Some(t.at),
            "sync.peers",
            "missing: the other directors' addresses",
        );
    }
    let port = match t.integer("port", p) {
        None => SYNC_PORT,
        Some(n) => match u16::try_from(n.value) {
            Ok(port) if port != 0 => port,
            _ => {
                p.add(Some(n.at), n.key, "must be between 1 and 65535");
                SYNC_PORT
            }
        },
    };
    let source = t.string("source", p).and_then(|s| ipv4(&s, "source", p));
    if let Some(src) = source
        && peers.contains(&src)
    {
        p.add(
            Some(t.at),
            "sync.peers",
            format!("{src} is this director's own sync.source"),
        );
    }
    (p.len() == before).then_some(SyncConfig {
        peers,
        port,
        source,
    })
}
