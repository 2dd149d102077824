//! `[[vrrp]]`: the virtual routers this director takes part in, with keepalived's
//! `vrrp_instance` knobs under the same names where they exist.

use std::{collections::HashSet, net::Ipv4Addr, time::Duration};

use lb_common::MAX_GROUPS;
use toml_edit::TableLike;

use super::{
    health::argv,
    validate::{interface_name_problem, ipv4, ipv4_list},
    walk::{self, Problems, Table},
};

/// One VRRP instance (keepalived's `vrrp_instance`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    pub name: String,
    /// One of `director.interfaces`: adverts go out here and the VIPs are added here.
    pub interface: String,
    pub virtual_router_id: u8,
    /// 1..=255 (255: the address owner, master at once).
    pub priority: u8,
    /// Advertisement interval in centiseconds (version 2: whole seconds).
    pub advert_int_cs: u16,
    /// 2 (RFC 3768, keepalived's default) or 3 (RFC 5798).
    pub version: u8,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Addresses the master holds; every `[[vip]]` with one of them is forwarded only
    /// while this director is the master.
    pub vips: Vec<Ipv4Addr>,
    /// Version 2 simple password (`auth_type PASS`), at most 8 bytes.
    pub auth_pass: Option<String>,
    /// Source of unicast adverts (default: the interface's first IPv4 address).
    pub unicast_src: Option<Ipv4Addr>,
    /// Unicast peers instead of multicast 224.0.0.18; adverts from anyone else are dropped.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Gratuitous ARPs sent per VIP on becoming master (`garp_master_repeat`).
    pub garp_master_repeat: u32,
    /// Repeat the gratuitous ARPs this often while master (`garp_master_refresh`; off when
    /// absent).
    pub garp_master_refresh: Option<Duration>,
    pub notify: VrrpNotify,
    /// Other interfaces whose link going down puts the instance in FAULT (its own always
    /// does).
    pub track_interfaces: Vec<String>,
    /// Lower the priority by this while a VIP of the instance has no backend in service
    /// (keepalived's `track_script` with a `weight`, without the script): a healthier
    /// director takes over.
    pub track_pool_weight: Option<u8>,
}

/// Instances that change state together (keepalived's `vrrp_sync_group`): when one takes
/// over, stands down or faults, the others follow, so a group's VIPs stay on one director.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    /// Indexes into `Config::vrrp`.
    pub instances: Vec<usize>,
}

/// Reads every `[[vrrp_sync_group]]`; `instances` are the validated VRRP instances.
pub fn sync_groups(root: &Table<'_>, instances: &[VrrpConfig], p: &mut Problems) -> Vec<SyncGroup> {
    let mut groups: Vec<SyncGroup> = Vec::new();
    let mut member_of: Vec<Option<String>> = vec![None; instances.len()];
    for (i, (table, at)) in root.tables("vrrp_sync_group", p).into_iter().enumerate() {
        let path = format!("vrrp_sync_group[{i}]");
        let t = Table {
            path: &path,
            table,
            at,
        };
        t.only(&["name", "instances"], p);
        let name = match t.string("name", p) {
            Some(n) => n.value,
            None => {
                if t.get("name").is_none() {
                    p.add(
                        Some(at),
                        format!("{path}.name"),
                        "missing: the group's name",
                    );
                }
                continue;
            }
        };
        if groups.iter().any(|g| g.name == name) {
            p.add(
                Some(at),
                format!("{path}.name"),
                format!("{name:?} names two groups"),
            );
        }
        let Some(list) = t.get("instances") else {
            p.add(
                Some(at),
                format!("{path}.instances"),
                "missing: the [[vrrp]] names that change state together",
            );
            continue;
        };
        let mut members = Vec::new();
        for read in walk::strings(&list, p) {
            match instances.iter().position(|v| v.name == read.value) {
                None => p.add(
                    Some(read.at),
                    read.key,
                    format!("{:?} is no [[vrrp]] instance's name", read.value),
                ),
                Some(index) => match &member_of[index] {
                    Some(other) => p.add(
                        Some(read.at),
                        read.key,
                        format!("{:?} is already in sync group {other:?}", read.value),
                    ),
                    // Members lowered one by one would each win and lose on different
                    // directors, and the group would never settle (keepalived ignores
                    // tracking weights in sync groups for the same reason).
                    None if instances[index].track_pool_weight.is_some() => p.add(
                        Some(read.at),
                        read.key,
                        format!(
                            "{:?} has track_pool_weight: the members of a sync group change state together, so none may weigh its own pool",
                            read.value
                        ),
                    ),
                    None => {
                        member_of[index] = Some(name.clone());
                        members.push(index);
                    }
                },
            }
        }
        if list.item.as_array().is_some_and(|a| a.len() < 2) {
            p.add(
                Some(list.at),
                &list.key,
                "a sync group needs at least two instances",
            );
        }
        groups.push(SyncGroup {
            name,
            instances: members,
        });
    }
    groups
}

/// Commands run (argv, no shell) on a state change, like keepalived's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VrrpNotify {
    pub master: Option<Vec<String>>,
    pub backup: Option<Vec<String>>,
    pub fault: Option<Vec<String>>,
    /// Run on every change with `INSTANCE <name> <STATE> <priority>` appended.
    pub any: Option<Vec<String>>,
}

const KEYS: [&str; 20] = [
    "name",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_int",
    "version",
    "preempt",
    "preempt_delay",
    "vips",
    "auth_pass",
    "unicast_src",
    "unicast_peers",
    "garp_master_repeat",
    "garp_master_refresh",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify",
    "track_interface",
    "track_pool_weight",
];

/// Reads every `[[vrrp]]`; `interfaces` are the director's.
pub fn instances(root: &Table<'_>, interfaces: &[String], p: &mut Problems) -> Vec<VrrpConfig> {
    let raw = root.tables("vrrp", p);
    let max = MAX_GROUPS as usize - 1;
    if raw.len() > max {
        p.add(
            Some(raw[max].1),
            format!("vrrp[{max}]"),
            format!("at most {max} VRRP instances are supported"),
        );
    }
    let mut out: Vec<VrrpConfig> = Vec::new();
    let mut names = HashSet::new();
    let mut routers = HashSet::new();
    let mut addresses = HashSet::new();
    for (i, (table, at)) in raw.into_iter().enumerate() {
        let Some(instance) = instance(i, table, at, interfaces, p) else {
            continue;
        };
        let path = format!("vrrp[{i}]");
        if !names.insert(instance.name.clone()) {
            p.add(
                Some(at),
                format!("{path}.name"),
                format!("{:?} names two instances", instance.name),
            );
        }
        if !routers.insert((instance.interface.clone(), instance.virtual_router_id)) {
            p.add(
                Some(at),
                format!("{path}.virtual_router_id"),
                format!(
                    "{} is used twice on {}: each instance is its own virtual router",
                    instance.virtual_router_id, instance.interface
                ),
            );
        }
        for vip in &instance.vips {
            if !addresses.insert(*vip) {
                p.add(
                    Some(at),
                    format!("{path}.vips"),
                    format!("{vip} is held by two instances: only one may own an address"),
                );
            }
        }
        out.push(instance);
    }
    out
}

fn instance(
    i: usize,
    table: &dyn TableLike,
    at: usize,
    interfaces: &[String],
    p: &mut Problems,
) -> Option<VrrpConfig> {
    let path = format!("vrrp[{i}]");
    let t = Table {
        path: &path,
        table,
        at,
    };
    let before = p.len();
    t.only(&KEYS, p);
    let missing = |p: &mut Problems, key: &str, what: &str| {
        p.add(
            Some(at),
            format!("{path}.{key}"),
            format!("missing: {what}"),
        );
    };

    let name = match t.string("name", p) {
        None => {
            if t.get("name").is_none() {
                missing(
                    p,
                    "name",
                    "the instance's name (in logs, status and notify)",
                );
            }
            String::new()
        }
        Some(n) => {
            let ok = !n.value.is_empty()
                && n.value.len() <= 32
                && n.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                p.add(
                    Some(n.at),
                    n.key,
                    "must be 1-32 characters of [A-Za-z0-9_.-]",
                );
            }
            n.value
        }
    };
    let interface = match t.string("interface", p) {
        None => {
            if t.get("interface").is_none() {
                missing(p, "interface", "one of director.interfaces");
            }
            String::new()
        }
        Some(n) => {
            if !interfaces.contains(&n.value) {
                p.add(
                    Some(n.at),
                    n.key,
                    format!(
                        "{:?} is not one of director.interfaces ({})",
                        n.value,
                        interfaces.join(", ")
                    ),
                );
            }
            n.value
        }
    };
    let virtual_router_id = match t.integer("virtual_router_id", p) {
        None => {
            if t.get("virtual_router_id").is_none() {
                missing(
                    p,
                    "virtual_router_id",
                    "1-255, the same on every director of this router",
                );
            }
            0
        }
        Some(n) => match u8::try_from(n.value) {
            Ok(v) if v != 0 => v,
            _ => {
                p.add(Some(n.at), n.key, "must be between 1 and 255");
                0
            }
        },
    };
    let priority = match t.integer("priority", p) {
        None => 100,
        Some(n) => match u8::try_from(n.value) {
            Ok(v) if v != 0 => v,
            _ => {
                p.add(
                    Some(n.at),
                    n.key,
                    "must be between 1 and 255 (255: the address owner)",
                );
                100
            }
        },
    };
    let version = match t.integer("version", p) {
        None => 3,
        Some(n) if n.value == 2 || n.value == 3 => n.value as u8,
        Some(n) => {
            p.add(
                Some(n.at),
                n.key,
                "must be 2 (RFC 3768, keepalived's default) or 3 (RFC 5798)",
            );
            3
        }
    };
    let advert_int_cs = match t.seconds("advert_int", p) {
        None => 100,
        Some(d) => {
            let exact = d.value.as_secs_f64() * 100.0;
            let cs = exact.round() as u64;
            let whole = (exact - exact.round()).abs() < 1e-6;
            if version == 2 && !(whole && cs.is_multiple_of(100) && (100..=25_500).contains(&cs)) {
                p.add(
                    Some(d.at),
                    d.key,
                    "version 2 carries whole seconds: 1 to 255",
                );
                100
            } else if version == 3 && !(whole && (1..=4095).contains(&cs)) {
                p.add(
                    Some(d.at),
                    d.key,
                    "version 3 carries centiseconds: 0.01 to 40.95 seconds, in steps of 0.01",
                );
                100
            } else {
                cs as u16
            }
        }
    };
    let preempt = t.boolean("preempt", p).is_none_or(|b| b.value);
    let preempt_delay = match t.seconds("preempt_delay", p) {
        None => Duration::ZERO,
        Some(d) if d.value <= Duration::from_secs(1000) => d.value,
        Some(d) => {
            p.add(Some(d.at), d.key, "seconds, between 0 and 1000");
            Duration::ZERO
        }
    };
    if !preempt && t.get("preempt_delay").is_some() {
        p.add(
            Some(at),
            format!("{path}.preempt_delay"),
            "has no effect with preempt = false",
        );
    }
    let vips = ipv4_list(&t, "vips", "VIP", p);
    if vips.is_empty() && t.get("vips").is_none() {
        missing(
            p,
            "vips",
            "the addresses the master holds, e.g. [\"198.18.0.100\"]",
        );
    } else if vips.len() > 20 {
        p.add(
            Some(at),
            format!("{path}.vips"),
            "at most 20 addresses per instance",
        );
    }
    let auth_pass = t.string("auth_pass", p).and_then(|a| {
        if version != 2 {
            p.add(
                Some(a.at),
                a.key,
                "version 3 has no authentication (RFC 5798); use version = 2 for PASS",
            );
            None
        } else if a.value.is_empty() || a.value.len() > 8 {
            p.add(
                Some(a.at),
                a.key,
                "1 to 8 bytes (keepalived silently uses only the first 8)",
            );
            None
        } else {
            Some(a.value)
        }
    });
    let unicast_src = t
        .string("unicast_src", p)
        .and_then(|a| ipv4(&a, "source", p));
    let unicast_peers = ipv4_list(&t, "unicast_peers", "peer", p);
    if unicast_src.is_some() && t.get("unicast_peers").is_none() {
        p.add(
            Some(at),
            format!("{path}.unicast_src"),
            "needs unicast_peers (without them adverts go to 224.0.0.18)",
        );
    }
    if let Some(src) = unicast_src
        && unicast_peers.contains(&src)
    {
        p.add(
            Some(at),
            format!("{path}.unicast_peers"),
            format!("{src} is this director's own unicast_src"),
        );
    }
    let garp_master_repeat = match t.integer("garp_master_repeat", p) {
        None => 5,
        Some(n) if (1..=100).contains(&n.value) => n.value as u32,
        Some(n) => {
            p.add(Some(n.at), n.key, "must be between 1 and 100");
            5
        }
    };
    let garp_master_refresh = match t.seconds("garp_master_refresh", p) {
        None => None,
        Some(d) if d.value.is_zero() => None,
        Some(d) if d.value >= Duration::from_secs(1) => Some(d.value),
        Some(d) => {
            p.add(Some(d.at), d.key, "seconds, at least 1 (0: off)");
            None
        }
    };
    let notify = VrrpNotify {
        master: argv(&t, "notify_master", p),
        backup: argv(&t, "notify_backup", p),
        fault: argv(&t, "notify_fault", p),
        any: argv(&t, "notify", p),
    };
    let mut track_interfaces = Vec::new();
    if let Some(list) = t.get("track_interface") {
        for name in walk::strings(&list, p) {
            match interface_name_problem(&name.value) {
                Some(problem) => p.add(Some(name.at), name.key, problem),
                None => track_interfaces.push(name.value),
            }
        }
    }
    let track_pool_weight =
        t.integer("track_pool_weight", p)
            .and_then(|w| match u8::try_from(w.value) {
                Ok(v) if (1..=254).contains(&v) => Some(v),
                _ => {
                    p.add(Some(w.at), w.key, "must be between 1 and 254");
                    None
                }
            });
    (p.len() == before).then_some(VrrpConfig {
        track_interfaces,
        track_pool_weight,
        name,
        interface,
        virtual_router_id,
        priority,
        advert_int_cs,
        version,
        preempt,
        preempt_delay,
        vips,
        auth_pass,
        unicast_src,
        unicast_peers,
        garp_master_repeat,
        garp_master_refresh,
        notify,
    })
}
