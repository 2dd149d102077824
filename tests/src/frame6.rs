//! Ethernet + IPv6 frames for datapath fixtures: extension headers, fragments, ICMPv6
//! errors, with valid checksums. The transport header is [`L4`], as for IPv4.

use std::net::Ipv6Addr;

use crate::frame::{ETH_P_IPV6, L4, TCP_ACK, checksum, ethernet};

pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_DEST_OPTIONS: u8 = 60;
pub const PROTO_ICMPV6: u8 = 58;

/// An extension header, in the order the frame carries them.
#[derive(Clone, Copy, Debug)]
pub enum Extension {
    /// 8 bytes of padding options.
    HopByHop,
    DestinationOptions,
    /// A type-4 (segment routing) header, 8 bytes.
    Routing {
        segments_left: u8,
    },
    /// `offset` in 8-byte units.
    Fragment {
        offset: u16,
        more: bool,
        id: u32,
    },
    /// Any other next-header value, 8 bytes long.
    Other {
        next_header: u8,
    },
}

impl Extension {
    fn next_header(&self) -> u8 {
        match self {
            Extension::HopByHop => NEXT_HOP_BY_HOP,
            Extension::DestinationOptions => NEXT_DEST_OPTIONS,
            Extension::Routing { .. } => NEXT_ROUTING,
            Extension::Fragment { .. } => NEXT_FRAGMENT,
            Extension::Other { next_header } => *next_header,
        }
    }

    fn bytes(&self, next: u8) -> [u8; 8] {
        match *self {
            // A PadN option filling the 6 bytes after the header's first two.
            Extension::HopByHop | Extension::DestinationOptions | Extension::Other { .. } => {
                [next, 0, 1, 4, 0, 0, 0, 0]
            }
            Extension::Routing { segments_left } => [next, 0, 4, segments_left, 0, 0, 0, 0],
            Extension::Fragment { offset, more, id } => {
                let field = (offset << 3) | u16::from(more);
                let [f0, f1] = field.to_be_bytes();
                let [i0, i1, i2, i3] = id.to_be_bytes();
                [next, 0, f0, f1, i0, i1, i2, i3]
            }
        }
    }
}

/// An Ethernet + IPv6 frame.
#[derive(Clone, Debug)]
pub struct Ipv6Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub l4: L4,
    pub payload: Vec<u8>,
    pub extensions: Vec<Extension>,
    pub hop_limit: u8,
}

impl Ipv6Frame {
    pub fn tcp(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: (Ipv6Addr, u16),
        dst: (Ipv6Addr, u16),
        flags: u8,
    ) -> Self {
        Ipv6Frame {
            src_mac,
            dst_mac,
            src: src.0,
            dst: dst.0,
            l4: L4::Tcp {
                src_port: src.1,
                dst_port: dst.1,
                flags,
            },
            payload: Vec::new(),
            extensions: Vec::new(),
            hop_limit: 64,
        }
    }

    pub fn udp(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: (Ipv6Addr, u16),
        dst: (Ipv6Addr, u16),
    ) -> Self {
        Ipv6Frame {
            l4: L4::Udp {
                src_port: src.1,
                dst_port: dst.1,
            },
            payload: b"ping".to_vec(),
            ..Ipv6Frame::tcp(src_mac, dst_mac, src, dst, 0)
        }
    }

    pub fn with(mut self, extension: Extension) -> Self {
        self.extensions.push(extension);
        self
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// The upper-layer bytes (transport header and payload, checksummed) and protocol.
    fn transport(&self) -> (u8, Vec<u8>) {
        let (proto, mut l4, csum_at) = match self.l4 {
            L4::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                let mut h = Vec::new();
                h.extend_from_slice(&src_port.to_be_bytes());
                h.extend_from_slice(&dst_port.to_be_bytes());
                h.extend_from_slice(&1u32.to_be_bytes());
                h.extend_from_slice(&u32::from(flags & TCP_ACK != 0).to_be_bytes());
                h.push(5 << 4);
                h.push(flags);
                h.extend_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]);
                h.extend_from_slice(&self.payload);
                (6u8, h, Some(16))
            }
            L4::Udp { src_port, dst_port } => {
                let mut h = Vec::new();
                h.extend_from_slice(&src_port.to_be_bytes());
                h.extend_from_slice(&dst_port.to_be_bytes());
                h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&self.payload);
                (17u8, h, Some(6))
            }
            L4::Other { proto } => (proto, self.payload.clone(), None),
        };
        if let Some(at) = csum_at {
            let sum = checksum(
                &[
                    pseudo_header(self.src, self.dst, proto, l4.len()),
                    l4.clone(),
                ]
                .concat(),
            );
            l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        (proto, l4)
    }

    pub fn build(&self) -> Vec<u8> {
        let (proto, l4) = self.transport();
        let mut headers = Vec::new();
        for (i, extension) in self.extensions.iter().enumerate() {
            let next = self
                .extensions
                .get(i + 1)
                .map_or(proto, Extension::next_header);
            headers.extend_from_slice(&extension.bytes(next));
        }
        let first = self
            .extensions
            .first()
            .map_or(proto, Extension::next_header);
        let mut frame = ethernet(self.dst_mac, self.src_mac, ETH_P_IPV6);
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&((headers.len() + l4.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[first, self.hop_limit]);
        frame.extend_from_slice(&self.src.octets());
        frame.extend_from_slice(&self.dst.octets());
        frame.extend_from_slice(&headers);
        frame.extend_from_slice(&l4);
        frame
    }
}

/// The IPv6 pseudo-header of an upper-layer checksum (RFC 8200, 8.1).
fn pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

/// An ICMPv6 message (`icmp_type`, `code`, `rest`: the 4 bytes after the checksum) from
/// `src` to `dst`, carrying `body` (for an error, as much of the offending packet as fits).
pub fn icmpv6(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    (icmp_type, code, rest): (u8, u8, [u8; 4]),
    body: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(body);
    let sum = checksum(
        &[
            pseudo_header(src, dst, PROTO_ICMPV6, icmp.len()),
            icmp.clone(),
        ]
        .concat(),
    );
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ipv6Frame {
        l4: L4::Other {
            proto: PROTO_ICMPV6,
        },
        payload: icmp,
        ..Ipv6Frame::tcp(src_mac, dst_mac, (src, 0), (dst, 0), 0)
    }
    .build()
}

/// `frame` under one 802.1Q tag (VLAN `vid`).
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    let [t0, t1] = vid.to_be_bytes();
    out.splice(12..12, [0x81, 0x00, t0, t1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_length_covers_extensions_and_transport() {
        let f = Ipv6Frame::tcp(
            [2; 6],
            [4; 6],
            ("2001:2::1".parse().unwrap(), 1),
            ("2001:2::2".parse().unwrap(), 2),
            0x02,
        )
        .with(Extension::HopByHop)
        .build();
        assert_eq!(f.len(), 14 + 40 + 8 + 20);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 28);
        assert_eq!((f[20], f[54]), (NEXT_HOP_BY_HOP, 6));
    }
}
