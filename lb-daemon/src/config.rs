//! The TOML configuration: parsing and validation, with no I/O beyond reading the file.
//!
//! Every error names the file, the line and the key (`lb.toml:12: vip[0].backend[1].weight:
//! ...`), all errors are reported at once, and nothing is applied unless the whole file is
//! valid (keepalived starts silently on a broken file; we refuse).

use std::{
    collections::HashSet,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::{MAX_BACKENDS, MAX_VIPS, PROTO_TCP, PROTO_UDP};
use serde::Deserialize;
use toml::Spanned;

/// At most half the backend slots (less the reserved id 0): a reload that replaces every
/// backend needs new ids while the old ones are still in service.
pub const MAX_CONFIGURED_BACKENDS: usize = (MAX_BACKENDS as usize - 1) / 2;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Names the pin directory (`/sys/fs/bpf/lbd/<instance>`) and the pid file.
    pub instance: String,
    /// Interfaces facing clients and real servers (one L2 segment).
    pub interfaces: Vec<String>,
    /// Native (driver) XDP, or generic (skb) XDP for drivers without XDP support.
    pub xdp_mode: XdpModeSetting,
    /// Capacity of the connection-tracking table.
    pub max_flows: u32,
    /// Idle timeouts of tracked flows.
    pub timeouts: Timeouts,
    /// Virtual services.
    pub vips: Vec<VipConfig>,
}

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpModeSetting {
    Native,
    Skb,
}

/// Flow idle timeouts, as `ipvsadm --set tcp tcpfin udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: Duration,
    pub tcp_fin: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            udp: Duration::from_secs(300),
        }
    }
}

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// Backend selection algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Weighted Maglev consistent hashing (`mh` in ipvsadm).
    Maglev,
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("maglev")
    }
}

/// One virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipConfig {
    pub address: Ipv4Addr,
    /// Also the real servers' port: DR forwarding never rewrites ports.
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub backends: Vec<BackendConfig>,
}

impl VipConfig {
    /// The datapath's key for this VIP.
    pub fn key(&self) -> lb_common::VipKey {
        lb_common::VipKey {
            addr: u32::from_ne_bytes(self.address.octets()),
            port: self.port.to_be(),
            proto: self.protocol.number(),
            _pad: 0,
        }
    }
}

/// One real server of a VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: Ipv4Addr,
    /// Share of new flows; 0 drains (no new flows, tracked flows continue).
    pub weight: u32,
    /// Fixed MAC; otherwise resolved through the neighbour table at start and reload.
    pub mac: Option<[u8; 6]>,
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `vip[0].backend[2].weight`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in one file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: None,
                key: String::new(),
                message: format!("cannot read: {err}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text`, reporting errors against `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            file,
            text,
            errors: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                v.syntax_error(&err);
                return Err(ConfigErrors(v.errors));
            }
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(v.errors))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    instance: Option<Spanned<String>>,
    director: Option<Spanned<RawDirector>>,
    timeouts: Option<Spanned<RawTimeouts>>,
    #[serde(default)]
    vip: Vec<Spanned<RawVip>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirector {
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    xdp_mode: Option<Spanned<String>>,
    max_flows: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp: Option<Spanned<i64>>,
    tcp_fin: Option<Spanned<i64>>,
    udp: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    scheduler: Option<Spanned<String>>,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Option<Spanned<String>>,
    weight: Option<Spanned<i64>>,
    mac: Option<Spanned<String>>,
}

/// Collects errors while turning the raw file into a [`Config`].
struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn error(&mut self, offset: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        let line = offset.map(|o| self.line_of(o));
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    fn error_at<T>(&mut self, at: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        self.error(Some(at.span().start), key, message);
    }

    /// toml reports syntax and type errors with a span and a message. The key is rebuilt
    /// from the text: the table headers above the offending line (counting `[[vip]]` and
    /// `[[vip.backend]]` to get indices) and the key on that line.
    fn syntax_error(&mut self, err: &toml::de::Error) {
        let offset = err.span().map(|s| s.start);
        let message = err.message().trim().to_owned();
        let key = offset
            .map(|o| key_path_at(self.text, o))
            .unwrap_or_default();
        self.error(offset, key, message);
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let instance = match &raw.instance {
            None => "lbd".to_owned(),
            Some(name) => {
                let ok = !name.get_ref().is_empty()
                    && name.get_ref().len() <= 32
                    && name
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    self.error_at(
                        name,
                        "instance",
                        "must be 1-32 characters of [A-Za-z0-9_-] (it names a directory)",
                    );
                }
                name.get_ref().clone()
            }
        };

        let (interfaces, xdp_mode, max_flows) = self.director(raw.director);
        let timeouts = self.timeouts(raw.timeouts);

        if raw.vip.len() > MAX_VIPS as usize {
            self.error_at(
                &raw.vip[MAX_VIPS as usize],
                "vip",
                format!("at most {MAX_VIPS} VIPs are supported"),
            );
        }
        let mut vips: Vec<VipConfig> = Vec::new();
        let mut seen = HashSet::new();
        let mut backend_count = 0usize;
        for (i, raw_vip) in raw.vip.into_iter().enumerate() {
            let at = raw_vip.span().start;
            if let Some(vip) = self.vip(i, raw_vip.into_inner(), at) {
                if !seen.insert((vip.address, vip.port, vip.protocol)) {
                    self.error(
                        Some(at),
                        format!("vip[{i}]"),
                        format!(
                            "{}:{} {} is defined twice",
                            vip.address, vip.port, vip.protocol
                        ),
                    );
                }
                backend_count += vip.backends.len();
                vips.push(vip);
            }
        }
        if backend_count > MAX_CONFIGURED_BACKENDS {
            self.error(
                None,
                "vip",
                format!("{backend_count} backends in all; at most {MAX_CONFIGURED_BACKENDS} are supported"),
            );
        }
        Config {
            instance,
            interfaces,
            xdp_mode,
            max_flows,
            timeouts,
            vips,
        }
    }

    fn director(
        &mut self,
        raw: Option<Spanned<RawDirector>>,
    ) -> (Vec<String>, XdpModeSetting, u32) {
        let Some(raw) = raw else {
            self.error(
                Some(0),
                "director",
                "missing section: [director] with interfaces = [\"eth0\"]",
            );
            return (
                Vec::new(),
                XdpModeSetting::Native,
                lb_common::DEFAULT_MAX_FLOWS,
            );
        };
        let director_at = raw.span().start;
        let raw = raw.into_inner();
        let mut interfaces = Vec::new();
        match raw.interfaces {
            None => self.error(
                Some(director_at),
                "director.interfaces",
                "missing: the interfaces to attach to",
            ),
            Some(list) if list.get_ref().is_empty() => {
                self.error_at(&list, "director.interfaces", "needs at least one interface")
            }
            Some(list) => {
                for (i, name) in list.into_inner().into_iter().enumerate() {
                    let n = name.get_ref();
                    if n.is_empty()
                        || n.len() > 15
                        || n.contains('/')
                        || n.chars().any(char::is_whitespace)
                    {
                        self.error_at(
                            &name,
                            format!("director.interfaces[{i}]"),
                            format!("{n:?} is not an interface name"),
                        );
                    } else if interfaces.contains(n) {
                        self.error_at(
                            &name,
                            format!("director.interfaces[{i}]"),
                            format!("{n:?} is listed twice"),
                        );
                    } else {
                        interfaces.push(n.clone());
                    }
                }
            }
        }
        let xdp_mode = match raw.xdp_mode {
            None => XdpModeSetting::Native,
            Some(mode) => match mode.get_ref().to_ascii_lowercase().as_str() {
                "native" | "driver" => XdpModeSetting::Native,
                "skb" | "generic" => XdpModeSetting::Skb,
                other => {
                    self.error_at(
                        &mode,
                        "director.xdp_mode",
                        format!("{other:?}: expected \"native\" or \"skb\""),
                    );
                    XdpModeSetting::Native
                }
            },
        };
        let max_flows = match raw.max_flows {
            None => lb_common::DEFAULT_MAX_FLOWS,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (1024..=64 << 20).contains(&v) => v,
                _ => {
                    self.error_at(
                        &n,
                        "director.max_flows",
                        "must be between 1024 and 67108864",
                    );
                    lb_common::DEFAULT_MAX_FLOWS
                }
            },
        };
        (interfaces, xdp_mode, max_flows)
    }

    fn timeouts(&mut self, raw: Option<Spanned<RawTimeouts>>) -> Timeouts {
        let mut timeouts = Timeouts::default();
        let Some(raw) = raw else { return timeouts };
        let raw = raw.into_inner();
        for (name, value, slot) in [
            ("tcp", raw.tcp, &mut timeouts.tcp),
            ("tcp_fin", raw.tcp_fin, &mut timeouts.tcp_fin),
            ("udp", raw.udp, &mut timeouts.udp),
        ] {
            if let Some(secs) = value {
                if (1..=86_400 * 7).contains(secs.get_ref()) {
                    *slot = Duration::from_secs(*secs.get_ref() as u64);
                } else {
                    self.errors.push(ConfigError {
                        file: self.file.to_owned(),
                        line: Some(self.line_of(secs.span().start)),
                        key: format!("timeouts.{name}"),
                        message: "seconds, between 1 and 604800".into(),
                    });
                }
            }
        }
        timeouts
    }

    fn vip(&mut self, i: usize, raw: RawVip, at: usize) -> Option<VipConfig> {
        let key = format!("vip[{i}]");
        let errors_before = self.errors.len();
        let address = match &raw.address {
            None => {
                self.error(Some(at), format!("{key}.address"), "missing");
                None
            }
            Some(a) => self.ipv4(a, &format!("{key}.address"), "VIP"),
        };
        let port = match &raw.port {
            None => {
                self.error(
                    Some(at),
                    format!("{key}.port"),
                    "missing (the real servers listen on the same port)",
                );
                None
            }
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(port) if port != 0 => Some(port),
                _ => {
                    self.error_at(p, format!("{key}.port"), "must be between 1 and 65535");
                    None
                }
            },
        };
        let protocol = match &raw.protocol {
            None => Some(Protocol::Tcp),
            Some(p) => match p.get_ref().to_ascii_lowercase().as_str() {
                "tcp" => Some(Protocol::Tcp),
                "udp" => Some(Protocol::Udp),
                other => {
                    self.error_at(
                        p,
                        format!("{key}.protocol"),
                        format!("{other:?}: expected \"tcp\" or \"udp\""),
                    );
                    None
                }
            },
        };
        let scheduler = match &raw.scheduler {
            None => Some(Scheduler::Maglev),
            Some(s) => match s.get_ref().to_ascii_lowercase().as_str() {
                "maglev" | "mh" => Some(Scheduler::Maglev),
                other => {
                    self.error_at(
                        s,
                        format!("{key}.scheduler"),
                        format!("{other:?}: supported: \"maglev\" (alias \"mh\")"),
                    );
                    None
                }
            },
        };
        if raw.backend.is_empty() {
            self.error(
                Some(at),
                format!("{key}.backend"),
                "no backends: add at least one [[vip.backend]]",
            );
        }
        let mut backends: Vec<BackendConfig> = Vec::new();
        for (j, raw_backend) in raw.backend.into_iter().enumerate() {
            let bat = raw_backend.span().start;
            let bkey = format!("{key}.backend[{j}]");
            if let Some(backend) = self.backend(&bkey, raw_backend.into_inner(), bat) {
                if address == Some(backend.address) {
                    self.error(
                        Some(bat),
                        format!("{bkey}.address"),
                        "is the VIP itself: a real server has its own address (the VIP goes on its lo)",
                    );
                } else if backends.iter().any(|b| b.address == backend.address) {
                    self.error(
                        Some(bat),
                        format!("{bkey}.address"),
                        format!("{} is listed twice in this VIP", backend.address),
                    );
                } else {
                    backends.push(backend);
                }
            }
        }
        if self.errors.len() != errors_before {
            return None;
        }
        Some(VipConfig {
            address: address?,
            port: port?,
            protocol: protocol?,
            scheduler: scheduler?,
            backends,
        })
    }

    fn backend(&mut self, key: &str, raw: RawBackend, at: usize) -> Option<BackendConfig> {
        let address = match &raw.address {
            None => {
                self.error(Some(at), format!("{key}.address"), "missing");
                None
            }
            Some(a) => self.ipv4(a, &format!("{key}.address"), "backend"),
        };
        let weight = match &raw.weight {
            None => Some(1),
            Some(w) => match u32::try_from(*w.get_ref()) {
                Ok(w) if w <= 65_535 => Some(w),
                _ => {
                    self.error_at(
                        w,
                        format!("{key}.weight"),
                        "must be between 0 (drain) and 65535",
                    );
                    None
                }
            },
        };
        let mac = match &raw.mac {
            None => Some(None),
            Some(m) => match parse_mac(m.get_ref()) {
                Some(mac) if mac[0] & 1 == 0 && mac != [0; 6] => Some(Some(mac)),
                Some(_) => {
                    self.error_at(m, format!("{key}.mac"), "must be a unicast, non-zero MAC");
                    None
                }
                None => {
                    self.error_at(
                        m,
                        format!("{key}.mac"),
                        format!(
                            "{:?}: expected six hex bytes like \"02:00:00:00:00:01\"",
                            m.get_ref()
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
        })
    }

    fn ipv4(&mut self, at: &Spanned<String>, key: &str, what: &str) -> Option<Ipv4Addr> {
        let text = at.get_ref();
        match text.parse::<Ipv4Addr>() {
            Ok(a)
                if a.is_unspecified()
                    || a.is_broadcast()
                    || a.is_multicast()
                    || a.is_loopback() =>
            {
                self.error_at(at, key, format!("{a} cannot be a {what} address"));
                None
            }
            Ok(a) => Some(a),
            Err(_) if text.parse::<std::net::Ipv6Addr>().is_ok() => {
                self.error_at(at, key, format!("{text}: IPv6 is not supported yet"));
                None
            }
            Err(_) => {
                self.error_at(at, key, format!("{text:?} is not an IPv4 address"));
                None
            }
        }
    }
}

/// The dotted key of the line holding `offset`, e.g. `vip[1].backend[0].weight`.
fn key_path_at(text: &str, offset: usize) -> String {
    let (mut table, mut vip, mut backend) = (String::new(), None::<usize>, None::<usize>);
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    // Headers may carry a trailing comment: `[[vip]]  # primary`.
    let without_comment = |l: &str| l.split('#').next().unwrap_or("").trim().to_owned();
    for line in text[..line_start].lines().map(without_comment) {
        let line = line.as_str();
        match line {
            "[[vip]]" => {
                vip = Some(vip.map_or(0, |i| i + 1));
                backend = None;
                table = format!("vip[{}]", vip.unwrap_or(0));
            }
            "[[vip.backend]]" => {
                backend = Some(backend.map_or(0, |i| i + 1));
                table = format!(
                    "vip[{}].backend[{}]",
                    vip.unwrap_or(0),
                    backend.unwrap_or(0)
                );
            }
            l if l.starts_with('[') => {
                table = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned()
            }
            _ => {}
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=').map(|(k, _)| k.trim()) {
        Some(key) if !line.trim_start().starts_with('[') && table.is_empty() => key.to_owned(),
        Some(key) if !line.trim_start().starts_with('[') => format!("{table}.{key}"),
        _ => table,
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests;
