//! The rules of each section, read through [`walk`](super::walk). Every rule reports its
//! problem and carries on, so one pass finds them all.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use lb_common::MAX_VIPS;
use toml_edit::TableLike;

use super::{
    BackendConfig, Config, MAX_CONFIGURED_BACKENDS, Persistence, Protocol, Scheduler, Timeouts,
    VipConfig, VipTimeouts, XdpModeSetting, health, parse_mac, sync, vrrp,
    walk::{self, Problems, Read, Table},
};

/// Checks the whole document; returns the config (meaningful only without problems).
pub fn config(root: &toml_edit::Table) -> (Config, Vec<(Option<usize>, String, String)>) {
    let mut p = Problems::default();
    let root = Table {
        path: "",
        table: root,
        at: 0,
    };
    root.only(
        &[
            "instance",
            "director",
            "timeouts",
            "vip",
            "vrrp",
            "vrrp_sync_group",
            "sync",
            "metrics",
        ],
        &mut p,
    );
    let instance = instance(&root, &mut p);
    let (interfaces, xdp_mode, max_flows, orphan_fragments) = director(&root, &mut p);
    let timeouts = timeouts(&root, &mut p);

    let raw_vips = root.tables("vip", &mut p);
    if raw_vips.len() > MAX_VIPS as usize {
        p.add(
            Some(raw_vips[MAX_VIPS as usize].1),
            format!("vip[{MAX_VIPS}]"),
            format!("at most {MAX_VIPS} VIPs are supported"),
        );
    }
    let mut vips: Vec<VipConfig> = Vec::new();
    let mut seen = HashSet::new();
    let mut backend_count = 0usize;
    let mut ipv6_vips = Vec::new();
    for (i, (table, at)) in raw_vips.into_iter().enumerate() {
        if let Some(vip) = vip(i, table, at, &mut p) {
            if !seen.insert((vip.address, vip.port, vip.protocol)) {
                p.add(
                    Some(at),
                    format!("vip[{i}]"),
                    format!(
                        "{} {} is defined twice",
                        std::net::SocketAddr::new(vip.address, vip.port),
                        vip.protocol
                    ),
                );
            }
            if vip.address.is_ipv6() {
                ipv6_vips.push((
                    i,
                    table
                        .get("address")
                        .and_then(|a| a.span())
                        .map_or(at, |s| s.start),
                ));
            }
            backend_count += vip.backends.len() + usize::from(vip.sorry_server.is_some());
            vips.push(vip);
        }
    }
    if backend_count > MAX_CONFIGURED_BACKENDS {
        p.add(
            None,
            "vip",
            format!(
                "{backend_count} backends in all; at most {MAX_CONFIGURED_BACKENDS} are supported"
            ),
        );
    }
    let vrrp = vrrp::instances(&root, &interfaces, &mut p);
    // VRRP moves IPv4 addresses only: an IPv6 VIP would be forwarded by every director.
    if !vrrp.is_empty() {
        for (i, at) in ipv6_vips {
            p.add(
                Some(at),
                format!("vip[{i}].address"),
                "an IPv6 VIP cannot be failed over by [[vrrp]] yet (VRRP here holds IPv4 \
                 addresses only, so every director would forward it): serve IPv6 VIPs from a \
                 director without [[vrrp]]",
            );
        }
    }
    let vrrp_sync_groups = vrrp::sync_groups(&root, &vrrp, &mut p);
    let sync = sync::sync(&root, &mut p);
    let metrics = super::metrics::metrics(&root, &mut p);
    let config = Config {
        metrics,
        instance,
        vrrp,
        vrrp_sync_groups,
        sync,
        interfaces,
        xdp_mode,
        max_flows,
        orphan_fragments,
        timeouts,
        vips,
    };
    (config, p.0)
}

fn instance(root: &Table<'_>, p: &mut Problems) -> String {
    let Some(name) = root.string("instance", p) else {
        return "lbd".to_owned();
    };
    let ok = !name.value.is_empty()
        && name.value.len() <= 32
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        p.add(
            Some(name.at),
            name.key,
            "must be 1-32 characters of [A-Za-z0-9_-] (it names a directory)",
        );
    }
    name.value
}

/// Linux's rule for interface names (`dev_valid_name`).
pub fn interface_name_problem(name: &str) -> Option<String> {
    let rule = "a Linux interface name has 1-15 bytes, is not \".\" or \"..\", and has no '/', ':' or whitespace";
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        // The kernel's isspace(), on bytes: \t..\r, space, and 0xa0 (Latin-1 NBSP).
        || name.bytes().any(|b| matches!(b, b'\t'..=b'\r' | b' ' | 0xa0));
    bad.then(|| {
        format!(
            "{name:?} is not an interface name ({} bytes; {rule})",
            name.len()
        )
    })
}

fn director(root: &Table<'_>, p: &mut Problems) -> (Vec<String>, XdpModeSetting, u32, u32) {
    let defaults = (
        Vec::new(),
        XdpModeSetting::Native,
        lb_common::DEFAULT_MAX_FLOWS,
        lb_common::ORPHAN_FRAGMENTS_HASH,
    );
    if root.get("director").is_none() {
        p.add(
            Some(0),
            "director",
            "missing section: [director] with interfaces = [\"eth0\"]",
        );
        return defaults;
    }
    let Some(director) = root.table("director", "director", p) else {
        return defaults;
    };
    director.only(
        &["interfaces", "xdp_mode", "max_flows", "orphan_fragments"],
        p,
    );
    let mut interfaces = Vec::new();
    match director.get("interfaces") {
        None => p.add(
            Some(director.at),
            "director.interfaces",
            "missing: the interfaces to attach to",
        ),
        Some(list) => {
            let names = walk::strings(&list, p);
            if names.is_empty() && list.item.as_array().is_some_and(|a| a.is_empty()) {
                p.add(Some(list.at), &list.key, "needs at least one interface");
            }
            for name in names {
                if let Some(problem) = interface_name_problem(&name.value) {
                    p.add(Some(name.at), name.key, problem);
                } else if interfaces.contains(&name.value) {
                    p.add(
                        Some(name.at),
                        name.key,
                        format!("{:?} is listed twice", name.value),
                    );
                } else {
                    interfaces.push(name.value);
                }
            }
        }
    }
    let xdp_mode = match director.string("xdp_mode", p) {
        None => XdpModeSetting::Native,
        Some(mode) => match mode.value.to_ascii_lowercase().as_str() {
            "native" | "driver" => XdpModeSetting::Native,
            "skb" | "generic" => XdpModeSetting::Skb,
            other => {
                p.add(
                    Some(mode.at),
                    mode.key,
                    format!("{other:?}: expected \"native\" or \"skb\""),
                );
                XdpModeSetting::Native
            }
        },
    };
    let max_flows = match director.integer("max_flows", p) {
        None => lb_common::DEFAULT_MAX_FLOWS,
        Some(n) => match u32::try_from(n.value) {
            Ok(v) if (1024..=64 << 20).contains(&v) => v,
            _ => {
                p.add(
                    Some(n.at),
                    n.key,
                    "must be between 1024 and 67108864 (the IPv4 and IPv6 tables hold that many flows each, \
                     about 232 bytes of kernel memory a flow)",
                );
                lb_common::DEFAULT_MAX_FLOWS
            }
        },
    };
    let orphan_fragments = match director.string("orphan_fragments", p) {
        None => lb_common::ORPHAN_FRAGMENTS_HASH,
        Some(policy) => match policy.value.as_str() {
            "hash" => lb_common::ORPHAN_FRAGMENTS_HASH,
            "pass" => lb_common::ORPHAN_FRAGMENTS_PASS,
            other => {
                p.add(
                    Some(policy.at),
                    policy.key,
                    format!("{other:?}: expected \"hash\" or \"pass\""),
                );
                lb_common::ORPHAN_FRAGMENTS_HASH
            }
        },
    };
    (interfaces, xdp_mode, max_flows, orphan_fragments)
}

fn timeouts(root: &Table<'_>, p: &mut Problems) -> Timeouts {
    let defaults = Timeouts::default();
    let Some(table) = root.table("timeouts", "timeouts", p) else {
        return defaults;
    };
    let given = timeout_keys(&table, p);
    Timeouts {
        tcp: given.tcp.unwrap_or(defaults.tcp),
        tcp_fin: given.tcp_fin.unwrap_or(defaults.tcp_fin),
        udp: given.udp.unwrap_or(defaults.udp),
    }
}

/// `tcp`, `tcp_fin` and `udp` of a timeouts table (`[timeouts]` or `[vip.timeouts]`).
fn timeout_keys(table: &Table<'_>, p: &mut Problems) -> VipTimeouts {
    table.only(&["tcp", "tcp_fin", "udp"], p);
    let mut given = VipTimeouts::default();
    for (name, slot) in [
        ("tcp", &mut given.tcp),
        ("tcp_fin", &mut given.tcp_fin),
        ("udp", &mut given.udp),
    ] {
        if let Some(secs) = table.integer(name, p) {
            if (1..=86_400 * 7).contains(&secs.value) {
                *slot = Some(Duration::from_secs(secs.value as u64));
            } else {
                p.add(Some(secs.at), secs.key, "seconds, between 1 and 604800");
            }
        }
    }
    given
}

fn vip(i: usize, table: &dyn TableLike, at: usize, p: &mut Problems) -> Option<VipConfig> {
    let path = format!("vip[{i}]");
    let vip = Table {
        path: &path,
        table,
        at,
    };
    let before = p.len();
    let mut known = vec![
        "address",
        "port",
        "protocol",
        "scheduler",
        "persistence_timeout",
        "persistence_granularity",
        "timeouts",
        "backend",
        "sorry_server",
    ];
    known.extend(health::VIP_KEYS);
    vip.only(&known, p);
    let address = match vip.string("address", p) {
        None if vip.get("address").is_none() => {
            p.add(Some(at), format!("{path}.address"), "missing");
            None
        }
        None => None,
        Some(a) => ip(&a, "VIP", p),
    };
    let port = match vip.integer("port", p) {
        None if vip.get("port").is_none() => {
            p.add(
                Some(at),
                format!("{path}.port"),
                "missing (the real servers listen on the same port)",
            );
            None
        }
        None => None,
        Some(n) => match u16::try_from(n.value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                p.add(Some(n.at), n.key, "must be between 1 and 65535");
                None
            }
        },
    };
    let protocol = match vip.string("protocol", p) {
        None if vip.get("protocol").is_none() => Some(Protocol::Tcp),
        None => None,
        Some(s) => match s.value.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            other => {
                p.add(
                    Some(s.at),
                    s.key,
                    format!("{other:?}: expected \"tcp\" or \"udp\""),
                );
                None
            }
        },
    };
    let scheduler = match vip.string("scheduler", p) {
        None if vip.get("scheduler").is_none() => Some(Scheduler::Maglev),
        None => None,
        Some(s) => match Scheduler::from_name(&s.value) {
            Some(scheduler) => Some(scheduler),
            None => {
                p.add(
                    Some(s.at),
                    s.key,
                    format!(
                        "{:?}: supported: \"maglev\" (alias \"mh\"), \"sh\", \"dh\", \"rr\", \"wrr\", \"lc\", \"wlc\"",
                        s.value
                    ),
                );
                None
            }
        },
    };
    if protocol == Some(Protocol::Udp)
        && matches!(
            scheduler,
            Some(Scheduler::LeastConnections | Scheduler::WeightedLeastConnections)
        )
        && let Some(s) = vip.get("scheduler")
    {
        p.add(
            Some(s.at),
            s.key,
            "lc and wlc count open TCP connections, which end with FIN or RST; a UDP flow has \
             no end the director sees: use \"maglev\", \"rr\" or \"wrr\"",
        );
    }
    let persistence = persistence(&vip, address, p);
    let timeouts_path = walk::join(&path, "timeouts");
    let timeouts = vip
        .table("timeouts", &timeouts_path, p)
        .map(|table| timeout_keys(&table, p))
        .unwrap_or_default();
    let raw_backends = vip.tables("backend", p);
    if raw_backends.is_empty() && vip.get("backend").is_none() {
        p.add(
            Some(at),
            format!("{path}.backend"),
            "no backends: add at least one [[vip.backend]]",
        );
    }
    let mut backends: Vec<BackendConfig> = Vec::new();
    for (j, (table, bat)) in raw_backends.into_iter().enumerate() {
        let bkey = format!("{path}.backend[{j}]");
        if let Some(backend) = backend(&bkey, table, bat, p) {
            if address == Some(backend.address) {
                p.add(
                    Some(bat),
                    format!("{bkey}.address"),
                    "is the VIP itself: a real server has its own address (the VIP goes on its lo)",
                );
            } else if backends.iter().any(|b| b.address == backend.address) {
                p.add(
                    Some(bat),
                    format!("{bkey}.address"),
                    format!("{} is listed twice in this VIP", backend.address),
                );
            } else if let Some(problem) = family_problem(address, backend.address) {
                p.add(Some(bat), format!("{bkey}.address"), problem);
            } else {
                backends.push(backend);
            }
        }
    }
    let health = health::vip_health(&vip, p);
    let sorry_server = sorry_server(&vip, address, &backends, p);
    if sorry_server.is_some() && health.check.is_none() {
        p.add(
            vip.get("sorry_server").map(|r| r.at),
            format!("{path}.sorry_server"),
            "needs a [vip.check]: without one every backend is always up",
        );
    }
    if p.len() != before {
        return None;
    }
    Some(VipConfig {
        address: address?,
        port: port?,
        protocol: protocol?,
        scheduler: scheduler?,
        persistence,
        timeouts,
        backends,
        role: health.role,
        max_lag: health.max_lag,
        on_down: health.on_down,
        check: health.check,
        sentinel: health.sentinel,
        notify: health.notify,
        sorry_server,
    })
}

/// A backend of another address family than its VIP's: a DR real server holds the VIP and
/// is reached on the same link, so both are of one family (as IPVS requires for DR).
fn family_problem(vip: Option<IpAddr>, backend: IpAddr) -> Option<String> {
    let vip = vip?;
    (vip.is_ipv4() != backend.is_ipv4()).then(|| {
        format!(
            "{backend} and the VIP {vip} are of different address families: a direct-routing \
             real server must be of the VIP's"
        )
    })
}

/// `persistence_timeout` (seconds; 0 or absent: off) and `persistence_granularity` (an IPv4
/// netmask such as "255.255.255.0", or a prefix length such as 24 or, for an IPv6 VIP, 64;
/// default: the whole address), as keepalived's and ipvsadm's `-M`. The mask is of the VIP's
/// family (`address`; IPv4 when it is unknown).
fn persistence(vip: &Table<'_>, address: Option<IpAddr>, p: &mut Problems) -> Option<Persistence> {
    let ipv6 = address.is_some_and(|a| a.is_ipv6());
    let timeout = match vip.integer("persistence_timeout", p) {
        None => 0,
        Some(n) => match u32::try_from(n.value) {
            Ok(secs) if secs <= 31_536_000 => secs,
            _ => {
                p.add(Some(n.at), n.key, "must be between 0 and 31536000 seconds");
                0
            }
        },
    };
    let whole = if ipv6 {
        IpAddr::V6(Ipv6Addr::from(u128::MAX))
    } else {
        IpAddr::V4(Ipv4Addr::BROADCAST)
    };
    let netmask = match vip.get("persistence_granularity") {
        None => whole,
        Some(read) => {
            let mask = if let Some(bits) = read.item.as_integer() {
                granularity_mask(Granularity::PrefixLength(bits), ipv6)
            } else if let Some(text) = read.item.as_str() {
                granularity_mask(Granularity::Netmask(text), ipv6)
            } else {
                None
            };
            match mask {
                Some(mask) => {
                    if timeout == 0 {
                        p.add(
                            Some(read.at),
                            read.key.clone(),
                            "needs persistence_timeout (a granularity without persistence does nothing)",
                        );
                    }
                    mask
                }
                None => {
                    let expected = if ipv6 {
                        "a prefix length from 1 to 128 such as 64 (the VIP is IPv6)"
                    } else {
                        "a netmask such as \"255.255.255.0\" or a prefix length from 1 to 32"
                    };
                    let given = match (read.item.as_integer(), read.item.as_str()) {
                        (Some(n), _) => format!("{n}: "),
                        (_, Some(text)) => format!("{text:?}: "),
                        _ => String::new(),
                    };
                    p.add(
                        Some(read.at),
                        read.key,
                        format!("{given}expected {expected}"),
                    );
                    whole
                }
            }
        }
    };
    (timeout != 0).then(|| Persistence {
        timeout: Duration::from_secs(timeout.into()),
        netmask,
    })
}

/// The mask of a `bits`-long prefix of an IPv4 (or IPv6) address, if `bits` fits.
/// A `persistence_granularity` as written: a prefix length or a dotted netmask.
pub enum Granularity<'a> {
    PrefixLength(i64),
    Netmask(&'a str),
}

/// The client mask a granularity gives a VIP of this family, or `None` when lbd refuses it:
/// a prefix length from 1 to 32 (128 for IPv6), or a contiguous IPv4 netmask (IPv4 only).
pub fn granularity_mask(granularity: Granularity<'_>, ipv6: bool) -> Option<IpAddr> {
    match granularity {
        Granularity::PrefixLength(bits) => prefix_mask(bits, ipv6),
        Granularity::Netmask(text) => match text.parse::<Ipv4Addr>() {
            Ok(m) if !ipv6 && u32::from(m).leading_ones() + u32::from(m).trailing_zeros() == 32 => {
                Some(IpAddr::V4(m))
            }
            _ => None,
        },
    }
}

fn prefix_mask(bits: i64, ipv6: bool) -> Option<IpAddr> {
    if ipv6 {
        let bits = u32::try_from(bits).ok().filter(|b| (1..=128).contains(b))?;
        Some(IpAddr::V6(Ipv6Addr::from(u128::MAX << (128 - bits))))
    } else {
        let bits = u32::try_from(bits).ok().filter(|b| (1..=32).contains(b))?;
        Some(IpAddr::V4(Ipv4Addr::from(u32::MAX << (32 - bits))))
    }
}

/// `sorry_server = "address"`, or a table with `address` and `mac`, like a backend's.
fn sorry_server(
    vip: &Table<'_>,
    vip_address: Option<IpAddr>,
    backends: &[BackendConfig],
    p: &mut Problems,
) -> Option<BackendConfig> {
    let read = vip.get("sorry_server")?;
    let server = if let Some(text) = read.item.as_str() {
        let read = Read {
            value: text.to_owned(),
            key: read.key.clone(),
            at: read.at,
            item: read.item,
        };
        BackendConfig {
            address: ip(&read, "sorry server", p)?,
            weight: 1,
            mac: None,
            notify: Default::default(),
        }
    } else if let Some(table) = read.item.as_table_like() {
        let server = backend(&read.key, table, read.at, p)?;
        if table.get("weight").is_some() || server.notify != Default::default() {
            p.add(
                Some(read.at),
                &read.key,
                "a sorry server has only an address and a mac",
            );
        }
        BackendConfig {
            weight: 1,
            ..server
        }
    } else {
        walk::wrong_type(&read, "an IP address or a table", p);
        return None;
    };
    if let Some(problem) = family_problem(vip_address, server.address) {
        p.add(Some(read.at), &read.key, problem);
        return None;
    }
    if Some(server.address) == vip_address || backends.iter().any(|b| b.address == server.address) {
        p.add(
            Some(read.at),
            &read.key,
            format!(
                "{} is the VIP or one of its backends: a sorry server stands in for them",
                server.address
            ),
        );
    }
    Some(server)
}

fn backend(
    path: &str,
    table: &dyn TableLike,
    at: usize,
    p: &mut Problems,
) -> Option<BackendConfig> {
    let backend = Table { path, table, at };
    backend.only(&["address", "weight", "mac", "notify_up", "notify_down"], p);
    let notify = health::notify(&backend, p);
    let address = match backend.string("address", p) {
        None if backend.get("address").is_none() => {
            p.add(Some(at), format!("{path}.address"), "missing");
            None
        }
        None => None,
        Some(a) => ip(&a, "backend", p),
    };
    let weight = match backend.integer("weight", p) {
        None if backend.get("weight").is_none() => Some(1),
        None => None,
        Some(w) => match u32::try_from(w.value) {
            Ok(v) if v <= 65_535 => Some(v),
            _ => {
                p.add(Some(w.at), w.key, "must be between 0 (drain) and 65535");
                None
            }
        },
    };
    let mac = match backend.string("mac", p) {
        None if backend.get("mac").is_none() => Some(None),
        None => None,
        Some(m) => match parse_mac(&m.value) {
            Some(mac) if mac[0] & 1 == 0 && mac != [0; 6] => Some(Some(mac)),
            Some(_) => {
                p.add(Some(m.at), m.key, "must be a unicast, non-zero MAC");
                None
            }
            None => {
                p.add(
                    Some(m.at),
                    m.key,
                    format!(
                        "{:?}: expected six hex bytes like \"02:00:00:00:00:01\"",
                        m.value
                    ),
                );
                None
            }
        },
    };
    Some(BackendConfig {
        address: address?,
        weight: weight?,
        mac: mac?,
        notify,
    })
}

/// `key`: an array of distinct IPv4 addresses (empty when absent; an empty array is
/// reported).
pub(super) fn ipv4_list(t: &Table<'_>, key: &str, what: &str, p: &mut Problems) -> Vec<Ipv4Addr> {
    let Some(list) = t.get(key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for read in walk::strings(&list, p) {
        if let Some(addr) = ipv4(&read, what, p) {
            if out.contains(&addr) {
                p.add(Some(read.at), read.key, format!("{addr} is listed twice"));
            } else {
                out.push(addr);
            }
        }
    }
    if list.item.as_array().is_some_and(|a| a.is_empty()) {
        p.add(Some(list.at), &list.key, "needs at least one address");
    }
    out
}

/// A VIP's, backend's or sorry server's address: IPv4 or IPv6, unicast, not loopback, not
/// link-local (a DR real server is reached on the director's link by its global address),
/// and not IPv4-mapped (write the IPv4 address itself).
pub(super) fn ip(read: &Read<'_, String>, what: &str, p: &mut Problems) -> Option<IpAddr> {
    let text = &read.value;
    let Ok(v6) = text.parse::<Ipv6Addr>() else {
        if text.parse::<Ipv4Addr>().is_err() {
            p.add(
                Some(read.at),
                &read.key,
                format!("{text:?} is not an IP address"),
            );
            return None;
        }
        return ipv4(read, what, p).map(IpAddr::V4);
    };
    let problem = if v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() {
        Some(format!("{v6} cannot be a {what} address"))
    } else if v6.is_unicast_link_local() {
        Some(format!(
            "{v6} is link-local: use the {what}'s global (or unique local) address"
        ))
    } else {
        v6.to_ipv4_mapped()
            .map(|v4| format!("{v6} is IPv4-mapped: write the IPv4 address {v4} itself"))
    };
    match problem {
        Some(problem) => {
            p.add(Some(read.at), &read.key, problem);
            None
        }
        None => Some(IpAddr::V6(v6)),
    }
}

pub(super) fn ipv4(read: &Read<'_, String>, what: &str, p: &mut Problems) -> Option<Ipv4Addr> {
    let text = &read.value;
    match text.parse::<Ipv4Addr>() {
        Ok(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() => {
            p.add(
                Some(read.at),
                &read.key,
                format!("{a} cannot be a {what} address"),
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) if text.parse::<std::net::Ipv6Addr>().is_ok() => {
            p.add(
                Some(read.at),
                &read.key,
                format!("{text}: an IPv6 address cannot be a {what} address (IPv4 only here)"),
            );
            None
        }
        Err(_) => {
            p.add(
                Some(read.at),
                &read.key,
                format!("{text:?} is not an IPv4 address"),
            );
            None
        }
    }
}
