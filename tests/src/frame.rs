//! Builds the frames datapath fixtures feed to `BPF_PROG_TEST_RUN`, with valid checksums.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Transport header of an IPv4 frame.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// Any other IP protocol, with no header of its own here.
    Other {
        proto: u8,
    },
}

/// An Ethernet + IPv4 frame.
#[derive(Clone, Debug)]
pub struct Ipv4Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// IPv4 flags + fragment offset field (host order), e.g. 0x2000 for "more fragments".
    pub frag: u16,
}

impl Ipv4Frame {
    pub fn tcp(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        flags: u8,
    ) -> Self {
        Ipv4Frame {
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
            frag: 0x4000, // don't fragment
        }
    }

    pub fn udp(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
    ) -> Self {
        Ipv4Frame {
            src_mac,
            dst_mac,
            src: src.0,
            dst: dst.0,
            l4: L4::Udp {
                src_port: src.1,
                dst_port: dst.1,
            },
            payload: b"ping".to_vec(),
            frag: 0,
        }
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let (proto, l4) = match self.l4 {
            L4::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                let mut h = Vec::with_capacity(20 + self.payload.len());
                h.extend_from_slice(&src_port.to_be_bytes());
                h.extend_from_slice(&dst_port.to_be_bytes());
                h.extend_from_slice(&1u32.to_be_bytes()); // seq
                h.extend_from_slice(&(if flags & TCP_ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
                h.push(5 << 4); // data offset
                h.push(flags);
                h.extend_from_slice(&64240u16.to_be_bytes()); // window
                h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                h.extend_from_slice(&self.payload);
                (6u8, h)
            }
            L4::Udp { src_port, dst_port } => {
                let mut h = Vec::with_capacity(8 + self.payload.len());
                h.extend_from_slice(&src_port.to_be_bytes());
                h.extend_from_slice(&dst_port.to_be_bytes());
                h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&self.payload);
                (17u8, h)
            }
            L4::Other { proto } => (proto, self.payload.clone()),
        };
        let mut l4 = l4;
        let csum_at = match self.l4 {
            L4::Tcp { .. } => Some(16),
            L4::Udp { .. } => Some(6),
            L4::Other { .. } => None,
        };
        if let Some(at) = csum_at {
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&self.src.octets());
            pseudo.extend_from_slice(&self.dst.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(&l4);
            let sum = checksum(&pseudo);
            l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        let mut ip = Vec::with_capacity(20);
        ip.push(0x45);
        ip.push(0);
        ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&0x1234u16.to_be_bytes());
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(64);
        ip.push(proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());

        let mut frame = ethernet(self.dst_mac, self.src_mac, ETH_P_IPV4);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        frame
    }
}

/// An ICMP error (`icmp_type`, `code`, `rest` = the 4 bytes after the checksum, e.g. the
/// next-hop MTU) from `router` to `to`, quoting the IP header and first 8 transport bytes
/// of `offending`, an Ethernet frame as [`Ipv4Frame::build`] makes it.
pub fn icmp_error(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    router: Ipv4Addr,
    to: Ipv4Addr,
    (icmp_type, code, rest): (u8, u8, [u8; 4]),
    offending: &[u8],
) -> Vec<u8> {
    let ihl = usize::from(offending[14] & 0x0f) * 4;
    let quoted = &offending[14..(14 + ihl + 8).min(offending.len())];
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quoted);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ipv4Frame {
        src_mac,
        dst_mac,
        src: router,
        dst: to,
        l4: L4::Other { proto: 1 },
        payload: icmp,
        frag: 0,
    }
    .build()
}

/// An ICMP echo request.
pub fn icmp_echo(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0, 1, 0, 1];
    icmp.extend_from_slice(b"ping");
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ipv4Frame {
        src_mac,
        dst_mac,
        src,
        dst,
        l4: L4::Other { proto: 1 },
        payload: icmp,
        frag: 0,
    }
    .build()
}

/// An Ethernet header.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// A broadcast ARP request.
pub fn arp_request(src_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], src_mac, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// An IPv6 TCP SYN (header only; enough for the datapath to classify it).
pub fn ipv6_tcp_syn(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    dst_port: u16,
) -> Vec<u8> {
    let mut f = ethernet(dst_mac, src_mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&20u16.to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&[0x50, TCP_SYN, 0xfa, 0xf0, 0, 0, 0, 0]);
    f
}

/// The Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let f = Ipv4Frame::tcp(
            [2; 6],
            [4; 6],
            ("198.18.0.1".parse().unwrap(), 1),
            ("198.18.0.2".parse().unwrap(), 2),
            TCP_SYN,
        )
        .build();
        assert_eq!(checksum(&f[14..34]), 0, "a correct header sums to zero");
        assert_eq!(f.len(), 14 + 20 + 20);
    }
}
