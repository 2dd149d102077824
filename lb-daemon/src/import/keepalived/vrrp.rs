//! vrrp_instance and vrrp_sync_group as lbd's `[[vrrp]]` and `[[vrrp_sync_group]]`, and the
//! tie between VIPs and instances.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use super::lex::Stmt;
use super::{At, Importer, Loc, Ms, Result, seconds};

#[derive(Default)]
pub(super) struct Vrrp {
    pub at: Loc,
    pub shown: String,
    pub raw_name: String,
    pub name: String,
    pub state: Option<String>,
    pub interface: String,
    pub virtual_router_id: u8,
    pub priority: Option<u8>,
    pub advert: At<Ms>,
    pub version: u8,
    pub version_is_default: bool,
    pub auth_pass: Option<String>,
    pub preempt: bool,
    /// Where `nopreempt` was.
    pub preempt_at: Option<Loc>,
    pub preempt_delay: At<Ms>,
    pub vips: Vec<Ipv4Addr>,
    pub unicast_src: At<Ipv4Addr>,
    pub unicast_peers: Vec<Ipv4Addr>,
    pub garp_repeat: Option<u32>,
    pub garp_refresh: At<Ms>,
    pub track_interfaces: Vec<String>,
    pub notify: Vec<(&'static str, Vec<String>)>,
}

pub(super) struct SyncGroup {
    pub at: Loc,
    pub shown: String,
    pub name: String,
    pub members: Vec<(Loc, String)>,
    pub instances: Vec<String>,
}

/// vrrp_instance keywords of keepalived features lbd does not have.
const INSTANCE_UNSUPPORTED: &[&str] = &[
    "debug",
    "no_accept",
    "skip_check_adv_addr",
    "strict_mode",
    "use_vmac",
    "vmac_xmit_base",
    "native_ipv6",
    "unicast_ttl",
    "check_unicast_src",
    "garp_master_refresh_repeat",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "notify_stop",
    "notify_deleted",
    "notify_master_rx_lower_pri",
    "track_file",
    "track_process",
    "track_bfd",
    "promote_secondaries",
    "kernel_rx_buf_size",
    "higher_prio_send_advert",
    "lower_prio_no_advert",
    "old_unicast_checksum",
    "mcast_dst_ip",
];

/// vrrp_sync_group keywords of keepalived features lbd does not have.
const GROUP_UNSUPPORTED: &[&str] = &[
    "global_tracking",
    "sync_group_tracking_weight",
    "track_interface",
    "track_script",
    "track_file",
    "track_process",
    "track_bfd",
];

impl Importer {
    fn ipv4(&self, st: &Stmt, text: &str) -> Result<Ipv4Addr> {
        match self.address(st, text)? {
            IpAddr::V4(a) => Ok(a),
            IpAddr::V6(_) => {
                let message = format!("{}: {text}: lbd's VRRP moves IPv4 addresses only", st.key());
                Err((st.at, message))
            }
        }
    }

    /// lbd names are 1-32 of `[A-Za-z0-9_.-]`; anything else is replaced, with a warning.
    fn lbd_name(&mut self, st: &Stmt, raw: &str) -> String {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        let name: String = raw
            .chars()
            .map(|c| if allowed(c) { c } else { '_' })
            .take(32)
            .collect();
        if name != raw {
            let message = format!(
                "vrrp_instance {raw:?} is named {name:?} in lbd (1-32 of A-Z a-z 0-9 _ . -)"
            );
            self.warn(st.at, message);
        }
        name
    }

    pub(super) fn vrrp_instance(&mut self, s: &Stmt) -> Result<()> {
        let raw_name = self.needed(s, 0, "a name")?.to_owned();
        let name = self.lbd_name(s, &raw_name);
        if self.vrrps.iter().any(|v| v.name == name) {
            return Err((s.at, format!("a second vrrp_instance named {name:?}")));
        }
        let mut v = Vrrp {
            at: s.at,
            shown: s.shown(),
            raw_name,
            name,
            version: self.version.unwrap_or(2),
            version_is_default: self.version.is_none(),
            preempt: true,
            garp_repeat: self.garp_repeat,
            garp_refresh: self.garp_refresh,
            ..Vrrp::default()
        };
        let (mut interface, mut router_id, mut auth) = (None, None, None);
        let mut vip_lines: Vec<&Stmt> = Vec::new();
        for st in s.body() {
            match st.key() {
                "state" => v.state = st.arg(0).map(str::to_ascii_uppercase),
                "interface" => interface = Some(self.needed(st, 0, "an interface")?.to_owned()),
                "virtual_router_id" => router_id = Some(self.integer(st, 1, 255)? as u8),
                "priority" => v.priority = Some(self.integer(st, 1, 255)? as u8),
                "advert_int" => v.advert = Some((st.at, self.millis(st)?)),
                "version" => {
                    v.version = self.integer(st, 2, 3)? as u8;
                    v.version_is_default = false;
                }
                "authentication" => auth = Some(st),
                // What lbd's master does anyway: it holds its VIPs as its own addresses.
                "accept" => {}
                "virtual_ipaddress" => vip_lines.extend(st.body()),
                "virtual_ipaddress_excluded" => {
                    let message = "virtual_ipaddress_excluded: lbd holds these like virtual_ipaddress, \
                                   and lists them in its adverts (a keepalived peer would count others)";
                    self.warn(st.at, message);
                    vip_lines.extend(st.body());
                }
                "unicast_src_ip" => {
                    let address = self.ipv4(st, self.needed(st, 0, "an address")?)?;
                    v.unicast_src = Some((st.at, address));
                }
                "unicast_peer" => {
                    for peer in st.body() {
                        v.unicast_peers.push(self.ipv4(peer, peer.key())?);
                        if peer.words.len() > 1 {
                            let message = format!("unicast_peer {}: the options after the address are ignored", peer.key());
                            self.warn(peer.at, message);
                        }
                    }
                }
                "nopreempt" => {
                    v.preempt = false;
                    v.preempt_at = Some(st.at);
                }
                "preempt" => v.preempt = true,
                "preempt_delay" => v.preempt_delay = Some((st.at, self.millis(st)?)),
                "garp_master_repeat" => v.garp_repeat = Some(self.integer(st, 1, 100)? as u32),
                "garp_master_refresh" => v.garp_refresh = Some((st.at, self.millis(st)?)),
                "notify_master" => self.notify(st, "notify_master", &mut v),
                "notify_backup" => self.notify(st, "notify_backup", &mut v),
                "notify_fault" => self.notify(st, "notify_fault", &mut v),
                "notify" => self.notify(st, "notify", &mut v),
                "track_interface" => {
                    for line in st.body() {
                        v.track_interfaces.push(line.key().to_owned());
                        if line.words.len() > 1 {
                            let message = format!("track_interface {}: the weight is ignored: lbd puts the instance in FAULT while the interface is down", line.key());
                            self.warn(line.at, message);
                        }
                    }
                }
                "track_script" => self.unsupported(
                    st,
                    "lbd runs no VRRP scripts; for a script that tests the pool's own health, \
                     track_pool_weight = N lowers the priority while a VIP has no backend in service",
                ),
                "smtp_alert" => self.unsupported(st, "lbd sends no e-mail"),
                "dont_track_primary" => {
                    self.unsupported(st, "lbd always faults the instance while its interface is down")
                }
                "mcast_src_ip" => self.unsupported(
                    st,
                    "lbd sends from the interface's first address, or from unicast_src_ip to unicast peers",
                ),
                "garp_master_delay" => {
                    self.unsupported(st, "lbd sends its gratuitous ARPs at once on becoming master")
                }
                "lvs_sync_daemon_interface" => self.unsupported(st, "lbd's flow sync is [sync] with peers"),
                "virtual_routes" | "virtual_rules" => self.unsupported(st, "lbd moves addresses only"),
                key if INSTANCE_UNSUPPORTED.contains(&key) => self.unsupported(st, ""),
                _ => self.unknown(st, "vrrp_instance"),
            }
        }
        let missing = |what: &str| (s.at, format!("vrrp_instance {}: no {what}", v.name));
        v.interface = interface.ok_or_else(|| missing("interface"))?;
        v.virtual_router_id = router_id.ok_or_else(|| missing("virtual_router_id"))?;
        for line in vip_lines {
            let vip = self.virtual_ipaddress(line, &v.interface)?;
            if v.vips.contains(&vip) || self.vrrps.iter().any(|o| o.vips.contains(&vip)) {
                let message =
                    format!("{vip} is held twice: only one vrrp_instance may own an address");
                return Err((line.at, message));
            }
            v.vips.push(vip);
        }
        if let Some(st) = auth {
            self.authentication(st, &mut v)?;
        }
        self.settle(&mut v);
        self.vrrps.push(v);
        Ok(())
    }

    fn notify(&mut self, st: &Stmt, key: &'static str, v: &mut Vrrp) {
        if let Some(text) = self.command(st, false) {
            // keepalived appends "INSTANCE name STATE priority" to `notify`; so does lbd.
            let argv = self.argv(st, &text, key == "notify");
            v.notify.push((key, argv));
        }
    }

    /// `ADDR[/LEN] [dev IF] [brd X] [scope S] [label L] ...`: lbd adds ADDR as a /32 on the
    /// instance's interface; whatever else the line asks for is reported.
    fn virtual_ipaddress(&mut self, line: &Stmt, interface: &str) -> Result<Ipv4Addr> {
        let (address, length) = match line.key().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (line.key(), None),
        };
        let vip = self.ipv4(line, address)?;
        let mut ignored: Vec<String> = length
            .filter(|l| *l != "32")
            .map(|l| format!("/{l}"))
            .into_iter()
            .collect();
        let mut dev = None;
        let mut words = line.args().iter().map(|w| w.text.as_str());
        while let Some(word) = words.next() {
            match word {
                "dev" => dev = words.next(),
                "brd" | "broadcast" | "scope" | "label" | "preferred_lft" | "valid_lft"
                | "metric" | "peer" | "track_group" => {
                    ignored.push(format!("{word} {}", words.next().unwrap_or("")))
                }
                other => ignored.push(other.to_owned()),
            }
        }
        let elsewhere = dev.filter(|d| *d != interface);
        if elsewhere.is_some() || !ignored.is_empty() {
            let mut message =
                format!("lbd adds {vip} as a /32 on {interface}, the instance's interface");
            if let Some(d) = elsewhere {
                message = format!("{message}, not on {d}");
            }
            if !ignored.is_empty() {
                message = format!("{message}; ignored: {}", ignored.join(", "));
            }
            self.warn(line.at, message);
        }
        Ok(vip)
    }

    fn authentication(&mut self, s: &Stmt, v: &mut Vrrp) -> Result<()> {
        let (mut kind, mut pass) = (None, None);
        for st in s.body() {
            match st.key() {
                "auth_type" => kind = Some(self.needed(st, 0, "PASS or AH")?.to_ascii_uppercase()),
                "auth_pass" => pass = Some((st.at, self.needed(st, 0, "a password")?.to_owned())),
                _ => self.unknown(st, "authentication"),
            }
        }
        match (kind.as_deref(), pass) {
            (Some("AH"), _) => Err((
                s.at,
                "auth_type AH is not supported by lbd (VRRPv2 PASS only): the directors would \
                 drop each other's adverts"
                    .into(),
            )),
            (Some("PASS"), None) => {
                self.warn(s.at, "auth_type PASS without auth_pass: no authentication");
                Ok(())
            }
            (Some("PASS"), Some((at, _))) if v.version == 3 => {
                let message = "auth_pass: VRRP version 3 has no authentication (keepalived ignores it too); dropped";
                self.warn(at, message);
                Ok(())
            }
            (Some("PASS"), Some((at, mut password))) => {
                if password.len() > 8 {
                    // keepalived sends the first 8 bytes; lbd refuses longer ones.
                    let mut end = 8;
                    while !password.is_char_boundary(end) {
                        end -= 1;
                    }
                    password.truncate(end);
                    let message = format!(
                        "auth_pass: keepalived uses only its first 8 bytes; lbd is given {password:?}"
                    );
                    self.warn(at, message);
                }
                v.auth_pass = Some(password);
                Ok(())
            }
            (Some(other), _) => Err((s.at, format!("auth_type {other}: expected PASS or AH"))),
            (None, Some((at, _))) => {
                let message = "auth_pass without auth_type PASS: keepalived uses no authentication then; ignored";
                self.warn(at, message);
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// Values keepalived accepts but lbd's ranges or rules refuse.
    fn settle(&mut self, v: &mut Vrrp) {
        // keepalived derives a missing priority from the state: MASTER is the address owner.
        let master = v.state.as_deref() == Some("MASTER");
        if master && v.priority.is_none() {
            v.priority = Some(255);
        }
        // ... and clears nopreempt for an initial MASTER or the owner, and preempt_delay for
        // an initial MASTER: that director preempts.
        if !v.preempt && (master || v.priority == Some(255)) {
            let at = v.preempt_at.unwrap_or_default();
            self.warn(
                at,
                "nopreempt with state MASTER or priority 255: keepalived clears it, and so does lbd (this director preempts)",
            );
            v.preempt = true;
        }
        if master && let Some((at, _)) = v.preempt_delay.take() {
            self.warn(
                at,
                "preempt_delay with state MASTER: keepalived clears it, and so does lbd",
            );
        }
        if let Some((at, ms)) = v.advert {
            let (step, min, max, what) = match v.version {
                2 => (1000, 1000, 255_000, "whole seconds from 1 to 255"),
                _ => (10, 10, 40_950, "0.01 to 40.95 seconds"),
            };
            let settled = ((ms + step / 2) / step * step).clamp(min, max);
            if settled != ms {
                let version = v.version;
                let message = format!(
                    "advert_int {}: VRRP version {version} carries {what}; lbd uses {}",
                    seconds(ms),
                    seconds(settled)
                );
                self.warn(at, message);
            }
            v.advert = Some((at, settled));
        }
        if let Some((at, ms)) = v.preempt_delay {
            if !v.preempt {
                self.warn(at, "preempt_delay has no effect with nopreempt; dropped");
                v.preempt_delay = None;
            } else if ms > 1_000_000 {
                self.warn(
                    at,
                    "preempt_delay: lbd allows at most 1000 seconds; 1000 is used",
                );
                v.preempt_delay = Some((at, 1_000_000));
            }
        }
        if let Some((at, ms)) = v.garp_refresh.filter(|(_, ms)| (1..1000).contains(ms)) {
            let message = format!(
                "garp_master_refresh {}: lbd refreshes at most once a second; 1 is used",
                seconds(ms)
            );
            self.warn(at, message);
            v.garp_refresh = Some((at, 1000));
        }
        if let Some((at, _)) = v.unicast_src
            && v.unicast_peers.is_empty()
        {
            let message = "unicast_src_ip without unicast_peer: lbd multicasts from the interface's address; dropped";
            self.warn(at, message);
            v.unicast_src = None;
        }
        if v.vips.is_empty() {
            let message = format!(
                "vrrp_instance {} has no virtual_ipaddress: its master holds nothing",
                v.name
            );
            self.warn(v.at, message);
        }
    }

    pub(super) fn sync_group(&mut self, s: &Stmt) -> Result<()> {
        let name = self.needed(s, 0, "a name")?.to_owned();
        let mut members = Vec::new();
        for st in s.body() {
            match st.key() {
                "group" => {
                    for line in st.body() {
                        members.extend(line.words.iter().map(|w| (line.at, w.text.clone())));
                    }
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify" | "notify_stop" => {
                    self.unsupported(
                        st,
                        "lbd has no group notify scripts: give each vrrp_instance its own",
                    )
                }
                "smtp_alert" => self.unsupported(st, "lbd sends no e-mail"),
                key if GROUP_UNSUPPORTED.contains(&key) => self.unsupported(st, ""),
                _ => self.unknown(st, "vrrp_sync_group"),
            }
        }
        let group = SyncGroup {
            at: s.at,
            shown: s.shown(),
            name,
            members,
            instances: Vec::new(),
        };
        self.groups.push(group);
        Ok(())
    }

    /// Members may be defined after their group. A group left with fewer than two members is
    /// dropped, as keepalived drops it.
    pub(super) fn resolve_sync_groups(&mut self) {
        let mut taken: HashSet<String> = HashSet::new();
        let mut groups = std::mem::take(&mut self.groups);
        for group in &mut groups {
            for (at, raw) in &group.members {
                let message = match self.vrrps.iter().find(|v| &v.raw_name == raw) {
                    None => format!(
                        "vrrp_sync_group {}: no vrrp_instance {raw}; left out",
                        group.name
                    ),
                    Some(v) if !taken.insert(v.name.clone()) => {
                        format!(
                            "vrrp_sync_group {}: {raw} is in another group already (lbd allows one); left out",
                            group.name
                        )
                    }
                    Some(v) => {
                        group.instances.push(v.name.clone());
                        continue;
                    }
                };
                self.warn(*at, message);
            }
            if group.instances.len() < 2 {
                let message = format!(
                    "vrrp_sync_group {}: fewer than two instances; dropped (keepalived drops it too)",
                    group.name
                );
                self.warn(group.at, message);
            }
        }
        groups.retain(|g| g.instances.len() >= 2);
        self.groups = groups;
    }

    /// lbd ties a [[vip]] to the [[vrrp]] whose vips hold its address: only that instance's
    /// master forwards it. keepalived ran the IPVS rules on every director, whatever the VRRP
    /// state (seed 000's forwarding loop between two directors).
    pub(super) fn tie_vips_to_vrrp(&mut self) -> Result<()> {
        if self.vrrps.is_empty() {
            let message = "no vrrp_instance names an interface: director.interfaces is [\"eth0\"]; \
                           set the interface(s) facing the clients and the real servers";
            self.warn(Loc::default(), message);
            return Ok(());
        }
        let held: HashSet<IpAddr> = self
            .vrrps
            .iter()
            .flat_map(|v| v.vips.iter().map(|a| IpAddr::V4(*a)))
            .collect();
        let mut told = HashSet::new();
        let mut messages = Vec::new();
        for vip in &self.vips {
            if vip.address.is_ipv6() {
                let message = format!(
                    "{}: lbd's VRRP fails over IPv4 only, so lbd refuses an IPv6 VIP in a file with \
                     vrrp_instances (every director would forward it)",
                    vip.address
                );
                return Err((vip.at, message));
            }
            if !held.contains(&vip.address) && told.insert(vip.address) {
                let message = format!(
                    "{} is in no vrrp_instance's virtual_ipaddress: every lbd director forwards it at \
                     once, as keepalived's IPVS rules did; add it to a [[vrrp]]'s vips so that only \
                     the master does",
                    vip.address
                );
                messages.push((vip.at, message));
            }
        }
        self.warnings.extend(messages);
        Ok(())
    }
}
