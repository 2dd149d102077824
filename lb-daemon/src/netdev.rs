//! The director's interfaces and its neighbours' MACs, from the current network namespace.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

/// One interface the program attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// Looks up an interface's index and MAC.
pub fn interface(name: &str) -> io::Result<InterfaceInfo> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: `cname` is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no such interface in this network namespace",
        ));
    }
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain data; the name fits (validated <= 15 bytes, NUL-terminated).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(cname.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills `req.ifr_ifru.ifru_hwaddr` for an existing interface.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl succeeded, so the union holds the hardware address.
    let sa_data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(sa_data) {
        *dst = src as u8;
    }
    Ok(InterfaceInfo {
        name: name.to_owned(),
        ifindex,
        mac,
    })
}

/// Every IPv4 address of this network namespace, with its interface, in the kernel's order.
pub fn ipv4_addresses() -> io::Result<Vec<(String, Ipv4Addr)>> {
    Ok(ip_addresses()?
        .into_iter()
        .filter_map(|(name, addr)| match addr {
            IpAddr::V4(v4) => Some((name, v4)),
            IpAddr::V6(_) => None,
        })
        .collect())
}

/// Every IPv4 and IPv6 address of this network namespace, with its interface, in the
/// kernel's order.
pub fn ip_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of its family.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        // SAFETY: an AF_INET address is a sockaddr_in, an AF_INET6 one a sockaddr_in6.
        let addr = match family {
            libc::AF_INET => IpAddr::V4(Ipv4Addr::from(u32::from_be(unsafe {
                (*(entry.ifa_addr as *const libc::sockaddr_in))
                    .sin_addr
                    .s_addr
            }))),
            libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(unsafe {
                (*(entry.ifa_addr as *const libc::sockaddr_in6))
                    .sin6_addr
                    .s6_addr
            })),
            _ => continue,
        };
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        found.push((name.to_string_lossy().into_owned(), addr));
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// Whether an interface is up and has a carrier (`IFF_UP` and `IFF_RUNNING`).
pub fn link_up(name: &str) -> io::Result<bool> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain data; the name fits (validated <= 15 bytes, NUL-terminated).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(cname.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills `req.ifr_ifru.ifru_flags` for an existing interface.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl succeeded, so the union holds the flags.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
}

/// Complete IPv4 and IPv6 neighbour entries on `interfaces`, from the kernel's neighbour
/// table (an rtnetlink dump). Called off the async runtime (MAC resolution blocks while ARP
/// runs).
pub fn neighbours(interfaces: &[String]) -> io::Result<BTreeMap<IpAddr, [u8; 6]>> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::{
        AddressFamily,
        neighbour::{NeighbourAddress, NeighbourAttribute},
    };
    let indexes: Vec<u32> = interfaces
        .iter()
        .filter_map(|name| interface(name).ok().map(|i| i.ifindex))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        let driver = tokio::spawn(connection);
        let mut entries = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut dump = handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute();
            while let Some(message) = dump.try_next().await.map_err(io::Error::other)? {
                let mut addr = None;
                let mut mac = None;
                for attribute in message.attributes {
                    match attribute {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                            addr = Some(IpAddr::V4(a))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                            addr = Some(IpAddr::V6(a))
                        }
                        NeighbourAttribute::LinkLayerAddress(bytes) => mac = Some(bytes),
                        _ => {}
                    }
                }
                entries.push(Neighbour {
                    ifindex: message.header.ifindex,
                    complete: is_complete(message.header.state),
                    addr,
                    mac,
                });
            }
        }
        driver.abort();
        Ok(usable_neighbours(&entries, &indexes))
    })
}

/// One neighbour table entry, as far as MAC resolution cares.
#[derive(Clone, Debug)]
pub struct Neighbour {
    pub ifindex: u32,
    /// Reachable, stale, delay, probe or permanent: it has a link-layer address.
    pub complete: bool,
    pub addr: Option<IpAddr>,
    pub mac: Option<Vec<u8>>,
}

fn is_complete(state: rtnetlink::packet_route::neighbour::NeighbourState) -> bool {
    use rtnetlink::packet_route::neighbour::NeighbourState as S;
    matches!(
        state,
        S::Reachable | S::Stale | S::Delay | S::Probe | S::Permanent
    )
}

/// The complete entries with an Ethernet address on one of `indexes`.
pub fn usable_neighbours(entries: &[Neighbour], indexes: &[u32]) -> BTreeMap<IpAddr, [u8; 6]> {
    entries
        .iter()
        .filter(|n| n.complete && indexes.contains(&n.ifindex))
        .filter_map(|n| {
            let mac: [u8; 6] = n.mac.as_deref()?.try_into().ok()?;
            (mac != [0; 6]).then_some((n.addr?, mac))
        })
        .collect()
}

/// MACs of `addrs`, sending one datagram out of every interface to each unresolved
/// address so the kernel ARPs (or, for IPv6, solicits) for it, and waiting up to `wait`.
/// Unresolved addresses are missing from the result.
pub fn resolve(
    addrs: &[IpAddr],
    interfaces: &[String],
    wait: Duration,
) -> io::Result<BTreeMap<IpAddr, [u8; 6]>> {
    let mut known = neighbours(interfaces)?;
    let missing: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| !known.contains_key(a))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(known);
    }
    let mut probes = Vec::new();
    for name in interfaces {
        for (family, any) in [(false, "0.0.0.0:0"), (true, "[::]:0")] {
            if !missing.iter().any(|a| a.is_ipv6() == family) {
                continue;
            }
            let probe = UdpSocket::bind(any)?;
            bind_to_device(&probe, name)?;
            probes.push((family, probe));
        }
    }
    let deadline = Instant::now() + wait;
    let mut last_probe: Option<Instant> = None;
    loop {
        if last_probe.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            for ((_, probe), addr) in probes.iter().flat_map(|(family, probe)| {
                missing
                    .iter()
                    .filter(move |a| a.is_ipv6() == *family)
                    .map(move |a| ((family, probe), a))
            }) {
                // The discard port: the datagram only exists to make the kernel resolve.
                let _ = probe.send_to(&[], SocketAddr::new(*addr, 9));
            }
            last_probe = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
        known = neighbours(interfaces)?;
        if missing.iter().all(|a| known.contains_key(a)) || Instant::now() >= deadline {
            return Ok(known);
        }
    }
}

fn bind_to_device(socket: &UdpSocket, name: &str) -> io::Result<()> {
    // SAFETY: passes a byte buffer and its length, as SO_BINDTODEVICE expects.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_ethernet_entries_on_our_interfaces_are_used() {
        let n = |ifindex, complete, last: u8, mac: Option<Vec<u8>>| Neighbour {
            ifindex,
            complete,
            addr: Some(IpAddr::from(Ipv4Addr::new(198, 18, 0, last))),
            mac,
        };
        let entries = [
            n(2, true, 11, Some(vec![2, 0, 0, 0, 0, 0xb])),
            n(2, false, 12, Some(vec![2, 0, 0, 0, 0, 0xc])), // incomplete or failed
            n(3, true, 13, Some(vec![2, 0, 0, 0, 0, 0xd])),  // another interface
            n(2, true, 14, None),                            // no link-layer address
            n(2, true, 15, Some(vec![0; 6])),
            n(2, true, 16, Some(vec![2, 0, 0, 0, 0xe])), // not Ethernet
            n(2, true, 17, Some(vec![2, 0, 0, 0, 0, 0x11])),
        ];
        let got = usable_neighbours(&entries, &[2]);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                (
                    IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)),
                    [2, 0, 0, 0, 0, 0xb]
                ),
                (
                    IpAddr::from(Ipv4Addr::new(198, 18, 0, 17)),
                    [2, 0, 0, 0, 0, 0x11]
                )
            ]
        );
    }

    #[test]
    fn loopback_is_found() {
        let lo = interface("lo").expect("lo exists in every namespace");
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.mac, [0; 6]);
        assert!(interface("no-such-if0").is_err());
    }
}
