//! Sync datagrams: a header and up to [`MAX_ENTRIES`] flows, each naming its real server by
//! address (ids are local to each director). Pure: bytes in, checked values out.
//!
//! ```text
//! header  "LBDS" | version 1 | 0 | count (u16 BE)
//! entry   src addr | dst addr | src port | dst port | proto | kind | 0 0 | backend addr
//! ```
//! Addresses and ports are in network byte order, as the datapath keeps them.

use lb_common::{FLOW_EVENT_CLOSING, FLOW_EVENT_NEW, FlowEvent, FlowKey, PROTO_TCP, PROTO_UDP};

const MAGIC: &[u8; 4] = b"LBDS";
const VERSION: u8 = 1;
const HEADER: usize = 8;
const ENTRY: usize = 20;
/// Flows per datagram: 1,288 bytes, under any Ethernet MTU.
pub const MAX_ENTRIES: usize = 64;

/// Encodes up to [`MAX_ENTRIES`] events into one datagram.
pub fn encode(events: &[FlowEvent]) -> Vec<u8> {
    let events = &events[..events.len().min(MAX_ENTRIES)];
    let mut out = Vec::with_capacity(HEADER + ENTRY * events.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, 0]);
    out.extend_from_slice(&(events.len() as u16).to_be_bytes());
    for e in events {
        out.extend_from_slice(&e.key.src_addr.to_ne_bytes());
        out.extend_from_slice(&e.key.dst_addr.to_ne_bytes());
        out.extend_from_slice(&e.key.src_port.to_ne_bytes());
        out.extend_from_slice(&e.key.dst_port.to_ne_bytes());
        out.extend_from_slice(&[e.key.proto, e.kind as u8, 0, 0]);
        out.extend_from_slice(&e.backend_addr.to_ne_bytes());
    }
    out
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    Header,
    Length,
    Entry,
}

/// Decodes a datagram; any bad entry drops the whole datagram (it is not ours to guess).
pub fn decode(datagram: &[u8]) -> Result<Vec<FlowEvent>, Malformed> {
    if datagram.len() < HEADER || &datagram[..4] != MAGIC || datagram[4] != VERSION {
        return Err(Malformed::Header);
    }
    let count = usize::from(u16::from_be_bytes([datagram[6], datagram[7]]));
    if count > MAX_ENTRIES || datagram.len() != HEADER + count * ENTRY {
        return Err(Malformed::Length);
    }
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let half = |b: &[u8]| u16::from_ne_bytes([b[0], b[1]]);
    datagram[HEADER..]
        .chunks_exact(ENTRY)
        .map(|e| {
            let proto = e[12];
            let kind = u32::from(e[13]);
            let ok = matches!(proto, PROTO_TCP | PROTO_UDP)
                && matches!(kind, FLOW_EVENT_NEW | FLOW_EVENT_CLOSING)
                && e[14..16] == [0, 0];
            ok.then(|| FlowEvent {
                key: FlowKey {
                    src_addr: word(&e[0..4]),
                    dst_addr: word(&e[4..8]),
                    src_port: half(&e[8..10]),
                    dst_port: half(&e[10..12]),
                    proto,
                    _pad0: 0,
                    _pad1: 0,
                },
                backend_addr: word(&e[16..20]),
                kind,
            })
            .ok_or(Malformed::Entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(port: u16, kind: u32) -> FlowEvent {
        FlowEvent {
            key: FlowKey {
                src_addr: u32::from_ne_bytes([198, 18, 0, 1]),
                dst_addr: u32::from_ne_bytes([198, 18, 0, 100]),
                src_port: port.to_be(),
                dst_port: 6379u16.to_be(),
                proto: PROTO_TCP,
                _pad0: 0,
                _pad1: 0,
            },
            backend_addr: u32::from_ne_bytes([198, 18, 0, 12]),
            kind,
        }
    }

    #[test]
    fn events_round_trip_and_a_datagram_holds_at_most_64() {
        let events: Vec<FlowEvent> = (0..70)
            .map(|i| {
                event(
                    40000 + i,
                    if i % 2 == 0 {
                        FLOW_EVENT_NEW
                    } else {
                        FLOW_EVENT_CLOSING
                    },
                )
            })
            .collect();
        let datagram = encode(&events);
        assert_eq!(datagram.len(), 8 + 64 * 20);
        assert_eq!(decode(&datagram).unwrap(), events[..64]);
    }

    #[test]
    fn anything_off_the_format_is_dropped_whole() {
        let good = encode(&[event(40000, FLOW_EVENT_NEW), event(40001, FLOW_EVENT_NEW)]);
        assert_eq!(decode(&good[..7]), Err(Malformed::Header));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(Malformed::Header));
        assert_eq!(decode(&good[..good.len() - 1]), Err(Malformed::Length));
        let mut bad = good.clone();
        bad[7] = 3;
        assert_eq!(decode(&bad), Err(Malformed::Length));
        for (offset, value) in [(8 + 20 + 12, 1u8), (8 + 13, 9), (8 + 14, 1)] {
            let mut bad = good.clone();
            bad[offset] = value;
            assert_eq!(
                decode(&bad),
                Err(Malformed::Entry),
                "byte {offset} = {value}"
            );
        }
    }
}
