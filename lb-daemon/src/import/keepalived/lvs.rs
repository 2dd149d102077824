//! virtual_server and real_server as lbd's `[[vip]]` and `[[vip.backend]]`.

use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use super::check::{Check, Timing};
use super::lex::Stmt;
use super::{At, Importer, Loc, Result};

pub(super) struct Server {
    pub at: Loc,
    pub shown: String,
    pub address: IpAddr,
    pub weight: u32,
    pub notify_up: Option<Vec<String>>,
    pub notify_down: Option<Vec<String>>,
    pub check: Option<(Loc, Check)>,
    port: Option<u16>,
    inhibit: bool,
    direct: bool,
}

pub(super) struct Vip {
    pub at: Loc,
    pub shown: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub scheduler: String,
    pub scheduler_is_default: bool,
    pub persistence_timeout: u64,
    pub granularity: Option<String>,
    pub sorry_server: Option<IpAddr>,
    pub drain: bool,
    pub check: Option<(Loc, Check)>,
    pub backends: Rc<Vec<Server>>,
}

/// A VIP a virtual_server stands for: address, port, and for a group entry where it is.
type Endpoint = (IpAddr, u16, String);

/// virtual_server keywords of IPVS or keepalived features lbd does not have.
const VIRTUAL_SERVER_UNSUPPORTED: &[&str] = &[
    "omega",
    "quorum",
    "quorum_up",
    "quorum_down",
    "hysteresis",
    "persistence_engine",
    "sorry_server_inhibit",
    "sorry_server_lvs_method",
    "hashed",
    "ops",
    "one_packet_scheduling",
    "flag-1",
    "flag-2",
    "flag-3",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "mh-fallback",
    "snmp_name",
];

/// Whether lbd takes `text` as a persistence granularity for a VIP of this family (the
/// config's own rule, so the TOML always passes `lbd check`).
fn granularity_fits(text: &str, ipv6: bool) -> bool {
    use crate::config::{Granularity, granularity_mask};
    let granularity = match text.parse::<i64>() {
        Ok(bits) => Granularity::PrefixLength(bits),
        Err(_) => Granularity::Netmask(text),
    };
    granularity_mask(granularity, ipv6).is_some()
}

impl Importer {
    pub(super) fn virtual_server(&mut self, s: &Stmt) -> Result<()> {
        let endpoints = self.endpoints(s)?;
        let Some(body) = s.block.as_deref() else {
            return Err((s.at, "virtual_server without a { } block".into()));
        };
        let mut timing = Timing::default();
        let (mut scheduler, mut protocol, mut direct) = (None, "tcp", false);
        let (mut persistence, mut granularity) = (0, None);
        let (mut sorry, mut inhibit, mut weight) = (None, false, 1);
        let mut server_lines = Vec::new();
        for st in body {
            if self.timing(st, &mut timing)? {
                continue;
            }
            match st.key() {
                "lb_algo" | "lvs_sched" => {
                    scheduler = Some((
                        st.at,
                        self.needed(st, 0, "a scheduler")?.to_ascii_lowercase(),
                    ))
                }
                "lb_kind" | "lvs_method" => direct = self.forwarding(st)?,
                "protocol" => {
                    protocol = match self
                        .needed(st, 0, "TCP or UDP")?
                        .to_ascii_uppercase()
                        .as_str()
                    {
                        "TCP" => "tcp",
                        "UDP" => "udp",
                        other => {
                            return Err((
                                st.at,
                                format!("protocol {other}: lbd balances TCP and UDP only"),
                            ));
                        }
                    }
                }
                // keepalived's persistence_timeout without a value is 6 minutes.
                "persistence_timeout" => {
                    persistence = match st.arg(0) {
                        None => 360,
                        Some(_) => self.integer(st, 0, 31_536_000)?,
                    }
                }
                "persistence_granularity" => {
                    granularity = Some((st.at, self.needed(st, 0, "a netmask")?.to_owned()))
                }
                "sorry_server" => sorry = Some(st),
                "inhibit_on_failure" => inhibit = true,
                "weight" => weight = self.integer(st, 0, 65_535)? as u32,
                "real_server" => server_lines.push(st),
                "ip_family" => {}
                "nat_mask" => self.unsupported(st, "NAT only"),
                "ha_suspend" => self.unsupported(
                    st,
                    "lbd checks real servers on every director, master or backup",
                ),
                "smtp_alert" => self.unsupported(st, "lbd sends no e-mail"),
                "virtualhost" => self.unsupported(st, "HTTP_GET only"),
                key if VIRTUAL_SERVER_UNSUPPORTED.contains(&key) => self.unsupported(st, ""),
                _ => self.unknown(st, "virtual_server"),
            }
        }
        let mut servers: Vec<Server> = Vec::new();
        for st in server_lines {
            let server = self.real_server(st, &timing, weight, inhibit)?;
            if !direct && !server.direct {
                let message = "virtual_server without lb_kind: keepalived's default is NAT, which lbd \
                               does not do; write lb_kind DR if direct routing was meant";
                return Err((s.at, message.into()));
            }
            if servers.iter().any(|o| o.address == server.address) {
                return Err((
                    st.at,
                    format!("real_server {} is listed twice", server.address),
                ));
            }
            servers.push(server);
        }
        if servers.is_empty() {
            return Err((
                s.at,
                "virtual_server without a real_server: lbd needs a backend per VIP".into(),
            ));
        }
        let (scheduler, scheduler_is_default) = self.scheduler(s, scheduler, protocol)?;
        let check = self.pick_check(&servers)?;
        let drain = check.is_some() && self.on_down(&servers);
        let granularity = match granularity {
            Some((at, _)) if persistence == 0 => {
                self.warn(
                    at,
                    "persistence_granularity without persistence_timeout: ignored",
                );
                None
            }
            Some((at, text)) => {
                let any_v6 = endpoints.iter().any(|(address, _, _)| address.is_ipv6());
                if !granularity_fits(&text, any_v6) {
                    let expected = if any_v6 {
                        "a prefix length from 1 to 128 (an IPv6 VIP takes no dotted netmask)"
                    } else {
                        "an IPv4 netmask (contiguous ones, e.g. 255.255.255.0) or a prefix length from 1 to 32"
                    };
                    return Err((
                        at,
                        format!("persistence_granularity {text}: expected {expected}"),
                    ));
                }
                if text.contains('.') {
                    Some(super::render::quote(&text))
                } else {
                    Some(text)
                }
            }
            None => None,
        };
        let sorry = match sorry {
            Some(st) => self.sorry_server(st, &endpoints, &servers, check.is_some())?,
            None => None,
        };
        let backends = Rc::new(servers);
        for (address, port, origin) in endpoints {
            if let Some(server) = backends.iter().find(|b| b.port.is_some_and(|p| p != port)) {
                let message = format!(
                    "real_server {} {}: the virtual_server's port is {port}; direct routing cannot \
                     rewrite ports, so the real server must listen on {port}",
                    server.address,
                    server.port.unwrap_or(port)
                );
                return Err((server.at, message));
            }
            if self
                .vips
                .iter()
                .any(|v| (v.address, v.port, v.protocol) == (address, port, protocol))
            {
                return Err((
                    s.at,
                    format!("{address} {port} {protocol}: a second virtual_server for it"),
                ));
            }
            self.vips.push(Vip {
                at: s.at,
                shown: format!("{}{origin}", s.shown()),
                address,
                port,
                protocol,
                scheduler: scheduler.clone(),
                scheduler_is_default,
                persistence_timeout: persistence,
                granularity: granularity.clone(),
                sorry_server: sorry,
                drain,
                check: check.clone(),
                backends: Rc::clone(&backends),
            });
        }
        Ok(())
    }

    fn endpoints(&mut self, s: &Stmt) -> Result<Vec<Endpoint>> {
        match s.arg(0) {
            None => Err((s.at, "virtual_server: missing its address and port".into())),
            Some("fwmark") => Err((
                s.at,
                "virtual_server fwmark: lbd has no firewall-mark services; give the VIP's address \
                 and port (against the localnode loop, lbd's own guard replaces the marks)"
                    .into(),
            )),
            Some("group") => {
                let name = self.needed(s, 1, "the group's name")?;
                let Some(group) = self.server_groups.get(name).cloned() else {
                    return Err((
                        s.at,
                        format!(
                            "virtual_server group {name}: there is no virtual_server_group {name}"
                        ),
                    ));
                };
                let endpoints = self.expand_group(&group)?;
                let count = endpoints.len();
                let message = format!(
                    "virtual_server group {name}: lbd has no groups; it becomes {count} [[vip]] with the \
                     same real servers, each checked on its own"
                );
                self.warn(s.at, message);
                Ok(endpoints)
            }
            Some(address) => {
                let address = self.address(s, address)?;
                let port = self.needed(s, 1, "a port (lbd has no port-less services)")?;
                Ok(vec![(address, self.port(s, port)?, String::new())])
            }
        }
    }

    /// `ADDR PORT` and `A.B.C.D-E PORT` entries; `fwmark` entries cannot be converted.
    fn expand_group(&mut self, group: &Stmt) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        for line in group.body() {
            if line.key() == "fwmark" {
                return Err((
                    line.at,
                    "virtual_server_group fwmark: lbd has no firewall-mark services".into(),
                ));
            }
            let port = self.needed(line, 0, "a port (lbd has no port-less services)")?;
            let port = self.port(line, port)?;
            let origin = format!(" (entry {} {})", self.place(line.at), line.shown());
            let Some((first, last)) = line.key().split_once('-') else {
                out.push((self.address(line, line.key())?, port, origin));
                continue;
            };
            let range_error = || {
                (
                    line.at,
                    format!(
                        "{}: expected a range A.B.C.D-E of IPv4 addresses",
                        line.key()
                    ),
                )
            };
            let IpAddr::V4(first) = self.address(line, first)? else {
                return Err(range_error());
            };
            let [a, b, c, d] = first.octets();
            let last: u8 = last.parse().map_err(|_| range_error())?;
            if last < d {
                return Err(range_error());
            }
            out.extend(
                (d..=last).map(|x| (IpAddr::V4(Ipv4Addr::new(a, b, c, x)), port, origin.clone())),
            );
        }
        if out.is_empty() {
            return Err((group.at, "virtual_server_group without entries".into()));
        }
        Ok(out)
    }

    /// `lb_kind DR` is what lbd does; NAT and TUN rewrite or wrap packets.
    fn forwarding(&self, st: &Stmt) -> Result<bool> {
        match self
            .needed(st, 0, "DR, NAT or TUN")?
            .to_ascii_uppercase()
            .as_str()
        {
            "DR" => Ok(true),
            other => {
                let message = format!(
                    "{} {other}: lbd forwards by direct routing only (lb_kind DR); with {other} the \
                     real servers would be reached and answer differently",
                    st.key()
                );
                Err((st.at, message))
            }
        }
    }

    /// lbd's scheduler for lb_algo (wlc when absent: keepalived's default). sed and nq become
    /// wlc: all three pick by open connections relative to weight and differ only in how idle
    /// servers and ties rank, so the balance stays alike. lblc, lblcr, fo and ovf have no
    /// counterpart close enough: an error.
    fn scheduler(&mut self, s: &Stmt, given: At<String>, protocol: &str) -> Result<(String, bool)> {
        let is_default = given.is_none();
        let (at, name) = given.unwrap_or((s.at, "wlc".into()));
        let lbd = match name.as_str() {
            "rr" | "wrr" | "lc" | "wlc" | "sh" | "dh" => name.clone(),
            "mh" | "maglev" => "maglev".into(),
            "sed" | "nq" => {
                let message = format!(
                    "lb_algo {name}: lbd has no {name}; wlc is used (it too picks by open flows relative \
                     to weight; only idle servers and ties rank differently)"
                );
                self.warn(at, message);
                "wlc".into()
            }
            "lblc" | "lblcr" => {
                let message = format!(
                    "lb_algo {name}: lbd has no locality-based scheduler; dh is the closest, but never \
                     moves a destination off an overloaded server: choose one of rr wrr lc wlc sh dh mh"
                );
                return Err((at, message));
            }
            other => {
                return Err((
                    at,
                    format!("lb_algo {other}: lbd's schedulers are rr wrr lc wlc sh dh mh"),
                ));
            }
        };
        if protocol == "udp" && lbd.ends_with("lc") {
            let default = if is_default {
                " (keepalived's default without lb_algo)"
            } else {
                ""
            };
            let message = format!(
                "lb_algo {name}{default} on a UDP service: lbd counts open flows by their TCP end, \
                 which UDP never shows; choose rr, wrr, sh, dh or mh"
            );
            return Err((at, message));
        }
        Ok((lbd, is_default))
    }

    fn real_server(
        &mut self,
        st: &Stmt,
        outer: &Timing,
        weight: u32,
        inhibit: bool,
    ) -> Result<Server> {
        let address = self.address(st, self.needed(st, 0, "an address")?)?;
        let port = match st.arg(1) {
            Some(p) => Some(self.port(st, p)?),
            None => None,
        };
        let mut server = Server {
            at: st.at,
            shown: st.shown(),
            address,
            port,
            weight,
            inhibit,
            direct: false,
            notify_up: None,
            notify_down: None,
            check: None,
        };
        let mut timing = Timing::default();
        let mut checkers = Vec::new();
        for line in st.body() {
            if self.timing(line, &mut timing)? {
                continue;
            }
            match line.key() {
                "weight" => server.weight = self.integer(line, 0, 65_535)? as u32,
                "inhibit_on_failure" => server.inhibit = true,
                key @ ("notify_up" | "notify_down") => {
                    let Some(text) = self.command(line, false) else {
                        continue;
                    };
                    let argv = Some(self.argv(line, &text, false));
                    match key {
                        "notify_up" => server.notify_up = argv,
                        _ => server.notify_down = argv,
                    }
                }
                "lvs_method" | "lb_kind" => server.direct = self.forwarding(line)?,
                "TCP_CHECK" | "MISC_CHECK" => checkers.push(line),
                "HTTP_GET" | "SSL_GET" | "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK"
                | "PING_CHECK" | "FILE_CHECK" | "BFD_CHECK" => {
                    let message = format!(
                        "{}: lbd has no such check (it runs TCP_CHECK, MISC_CHECK scripts and its own \
                         Redis check); without it a failed server would stay in service: use a \
                         MISC_CHECK script",
                        line.key()
                    );
                    return Err((line.at, message));
                }
                "uthreshold" | "lthreshold" => {
                    self.unsupported(line, "lbd has no connection limits")
                }
                "smtp_alert" => self.unsupported(line, "lbd sends no e-mail"),
                "virtualhost" => self.unsupported(line, "HTTP_GET only"),
                _ => self.unknown(line, "real_server"),
            }
        }
        if let Some(second) = checkers.get(1) {
            let message = format!(
                "real_server {address}: a second checker; lbd runs one check per VIP (keepalived wanted both to pass)"
            );
            return Err((second.at, message));
        }
        if let Some(checker) = checkers.first() {
            let check = self.checker(checker, &timing.within(outer), address)?;
            server.check = Some((checker.at, check));
        }
        Ok(server)
    }

    /// inhibit_on_failure is lbd's `on_down = "drain"`, which is per VIP. When the real servers
    /// disagree, lbd's default (remove, keepalived's too) is kept.
    fn on_down(&mut self, servers: &[Server]) -> bool {
        let inhibited: Vec<&Server> = servers.iter().filter(|s| s.inhibit).collect();
        if inhibited.is_empty() || inhibited.len() == servers.len() {
            return !inhibited.is_empty();
        }
        for server in inhibited {
            let message = format!(
                "real_server {}: inhibit_on_failure is per VIP in lbd (on_down = \"drain\") and other \
                 real servers do not have it; failed backends of this VIP are removed",
                server.address
            );
            self.warn(server.at, message);
        }
        false
    }

    fn sorry_server(
        &mut self,
        st: &Stmt,
        endpoints: &[Endpoint],
        servers: &[Server],
        checked: bool,
    ) -> Result<Option<IpAddr>> {
        let address = self.address(st, self.needed(st, 0, "an address")?)?;
        if let Some(port) = st.arg(1) {
            let port = self.port(st, port)?;
            if let Some((_, vip_port, _)) = endpoints.iter().find(|e| e.1 != port) {
                let message = format!(
                    "sorry_server {address} {port}: the virtual_server's port is {vip_port}; direct \
                     routing cannot rewrite ports"
                );
                return Err((st.at, message));
            }
        }
        if !checked {
            let message = "sorry_server without checkers: keepalived never used it (no real server \
                           ever failed), and lbd wants a check for it; dropped";
            self.warn(st.at, message);
            return Ok(None);
        }
        if servers.iter().any(|s| s.address == address) {
            self.warn(
                st.at,
                format!("sorry_server {address} is also a real_server, which lbd refuses; dropped"),
            );
            return Ok(None);
        }
        Ok(Some(address))
    }
}
