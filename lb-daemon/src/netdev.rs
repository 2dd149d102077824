//! The director's interfaces and its neighbours' MACs, from the current network namespace.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
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

/// Complete IPv4 neighbour entries on `interfaces`, from `/proc/net/arp`.
pub fn neighbours(interfaces: &[String]) -> io::Result<BTreeMap<Ipv4Addr, [u8; 6]>> {
    let text = std::fs::read_to_string("/proc/net/arp")?;
    Ok(parse_proc_net_arp(&text, interfaces))
}

/// Parses `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`.
pub fn parse_proc_net_arp(text: &str, interfaces: &[String]) -> BTreeMap<Ipv4Addr, [u8; 6]> {
    const ATF_COM: u32 = 0x2;
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [ip, _hw_type, flags, mac, _mask, device] = f.as_slice() else {
                return None;
            };
            let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
            if flags & ATF_COM == 0 || !interfaces.iter().any(|i| i == device) {
                return None;
            }
            Some((ip.parse().ok()?, crate::config::parse_mac(mac)?))
        })
        .collect()
}

/// MACs of `addrs`, sending one datagram out of every interface to each unresolved
/// address so the kernel ARPs for it, and waiting up to `wait`. Unresolved addresses are
/// missing from the result.
pub fn resolve(
    addrs: &[Ipv4Addr],
    interfaces: &[String],
    wait: Duration,
) -> io::Result<BTreeMap<Ipv4Addr, [u8; 6]>> {
    let mut known = neighbours(interfaces)?;
    let missing: Vec<Ipv4Addr> = addrs
        .iter()
        .filter(|a| !known.contains_key(a))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(known);
    }
    let mut probes = Vec::new();
    for name in interfaces {
        let probe = UdpSocket::bind("0.0.0.0:0")?;
        bind_to_device(&probe, name)?;
        probes.push(probe);
    }
    let deadline = Instant::now() + wait;
    let mut last_probe: Option<Instant> = None;
    loop {
        if last_probe.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            for (probe, addr) in probes
                .iter()
                .flat_map(|p| missing.iter().map(move |a| (p, a)))
            {
                // The discard port: the datagram only exists to make the kernel resolve.
                let _ = probe.send_to(&[], SocketAddrV4::new(*addr, 9));
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
    fn proc_net_arp_keeps_complete_entries_on_our_interfaces() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device
198.18.0.11      0x1         0x2         02:00:00:00:00:0b     *        eth0
198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        eth0
198.18.0.13      0x1         0x2         02:00:00:00:00:0d     *        eth1
198.18.0.14      0x1         0x6         02:00:00:00:00:0e     *        eth0
";
        let got = parse_proc_net_arp(text, &["eth0".to_owned()]);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                (Ipv4Addr::new(198, 18, 0, 11), [2, 0, 0, 0, 0, 0xb]),
                (Ipv4Addr::new(198, 18, 0, 14), [2, 0, 0, 0, 0, 0xe])
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
