//! The wire: a raw IPv4 socket for protocol 112 per instance, bound to its interface, and
//! gratuitous ARP through a packet socket. No subprocesses.

use std::{
    io::{self, Read},
    mem::size_of,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::packet::{MULTICAST, PROTO_VRRP, TTL};

/// One received IPv4 datagram of protocol 112, split into what the checks need.
#[derive(Debug)]
pub struct Received {
    pub ttl: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The VRRP message (the IP payload).
    pub message: Vec<u8>,
}

/// An instance's advert socket: sends with TTL 255 (multicast from the interface's
/// address, or unicast from `unicast_src`) and receives what arrives on the interface.
pub struct AdvertSocket {
    fd: AsyncFd<Socket>,
}

impl AdvertSocket {
    /// `unicast_src`: bind to it (unicast mode: only datagrams to it are received);
    /// otherwise join 224.0.0.18 on the interface and send from `source`.
    pub fn open(
        interface: &str,
        ifindex: u32,
        source: Ipv4Addr,
        unicast: bool,
    ) -> io::Result<AdvertSocket> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(PROTO_VRRP))),
        )?;
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.set_ttl(u32::from(TTL))?;
        socket.set_multicast_ttl_v4(u32::from(TTL))?;
        // Our own adverts are not news to us.
        socket.set_multicast_loop_v4(false)?;
        if unicast {
            socket.bind(&SocketAddrV4::new(source, 0).into())?;
        } else {
            socket.join_multicast_v4_n(&MULTICAST, &InterfaceIndexOrAddress::Index(ifindex))?;
            socket.set_multicast_if_v4(&source)?;
        }
        socket.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the socket, so its descriptor stays open and the same
        // for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(AdvertSocket { fd })
    }

    /// Sends one VRRP message to `dst` (the kernel writes the IP header).
    pub fn send(&self, message: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let sent = self
            .fd
            .get_ref()
            .send_to(message, &SocketAddrV4::new(dst, 0).into())?;
        if sent != message.len() {
            return Err(io::Error::other("short send"));
        }
        Ok(())
    }

    /// The next datagram (cancel-safe).
    pub async fn recv(&self) -> io::Result<Received> {
        let mut buf = [0u8; 2048];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => {
                    if let Some(received) = split_ipv4(&buf[..n]) {
                        return Ok(received);
                    }
                }
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The IPv4 header's TTL and addresses, and the payload; `None` for a datagram too short
/// for its header.
fn split_ipv4(datagram: &[u8]) -> Option<Received> {
    let ihl = usize::from(datagram.first()? & 0x0f) * 4;
    if ihl < 20 || datagram.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = total.clamp(ihl, datagram.len());
    let addr = |at: usize| {
        Ipv4Addr::new(
            datagram[at],
            datagram[at + 1],
            datagram[at + 2],
            datagram[at + 3],
        )
    };
    Some(Received {
        ttl: datagram[8],
        src: addr(12),
        dst: addr(16),
        message: datagram[ihl..end].to_vec(),
    })
}

const ETH_P_ARP: u16 = 0x0806;

/// A gratuitous ARP request for `address` from `mac`: sender and target are both the
/// address, so every host on the segment updates its entry (what keepalived sends).
pub fn gratuitous_arp(mac: [u8; 6], address: Ipv4Addr) -> [u8; 28] {
    let mut arp = [0u8; 28];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    arp[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    arp[8..14].copy_from_slice(&mac);
    arp[14..18].copy_from_slice(&address.octets());
    arp[18..24].copy_from_slice(&[0xff; 6]);
    arp[24..28].copy_from_slice(&address.octets());
    arp
}

/// A packet socket sending ARP frames to the broadcast address of one interface.
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl ArpSocket {
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Never read: a receive buffer of one packet keeps the kernel from queueing ARP.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int value of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(ArpSocket { fd, ifindex })
    }

    pub fn send(&self, arp: &[u8; 28]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ETH_P_ARP.to_be();
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: `arp` and `to` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                arp.as_ptr().cast(),
                arp.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The first IPv4 address of an interface (the VRRP source and tie-breaker), if any.
pub fn primary_address(interface: &str) -> io::Result<Option<Ipv4Addr>> {
    Ok(crate::netdev::ipv4_addresses()?
        .into_iter()
        .find(|(name, _)| name == interface)
        .map(|(_, addr)| addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_datagram_is_split_at_its_header_length() {
        let mut d = vec![0x46, 0, 0, 32, 0, 0, 0, 0, 255, 112, 0, 0];
        d.extend_from_slice(&[198, 18, 0, 2, 224, 0, 0, 18]);
        d.extend_from_slice(&[1, 2, 3, 4]); // one option word
        d.extend_from_slice(&[0x31, 51, 100, 1, 0, 100, 0, 0]);
        d.extend_from_slice(&[9, 9]); // link-layer padding past total length
        let r = split_ipv4(&d).unwrap();
        assert_eq!(
            (r.ttl, r.src, r.dst),
            (255, Ipv4Addr::new(198, 18, 0, 2), MULTICAST)
        );
        assert_eq!(r.message, [0x31, 51, 100, 1, 0, 100, 0, 0]);
        assert!(split_ipv4(&d[..19]).is_none());
        assert!(split_ipv4(&[0x4f; 40]).is_none(), "IHL 15 needs 60 bytes");
    }

    #[test]
    fn gratuitous_arp_names_the_address_as_sender_and_target() {
        let arp = gratuitous_arp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(&arp[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&arp[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&arp[14..18], &arp[24..28]);
        assert_eq!(&arp[24..28], &[198, 18, 0, 100]);
    }
}
