//! The TOML configuration: parsing and validation, with no I/O beyond reading the file.
//!
//! Every error names the file, the line and the key (`lb.toml:12: vip[0].backend[1].weight:
//! ...`) on one line, all errors are reported at once in line order, and nothing is applied
//! unless the whole file is valid (keepalived starts silently on a broken file; we refuse).
//!
//! - [`walk`]: typed reads from the parsed document, with key paths and positions.
//! - [`validate`]: the rules of each section.
//! - [`keypath`]: the key path of a syntax error, from the text alone.

mod health;
mod keypath;
mod metrics;
mod sync;
mod validate;
mod vrrp;
mod walk;

pub use metrics::METRICS_LISTEN;
pub use sync::{SYNC_PORT, SyncConfig};
pub use validate::{Granularity, granularity_mask};
pub use vrrp::{SyncGroup, VrrpConfig, VrrpNotify};

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::{MAX_BACKENDS, PROTO_TCP, PROTO_UDP};

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
    /// Capacity of the connection-tracking table (see [`Config::conntrack_memory_bytes`]).
    pub max_flows: u32,
    /// Later fragments whose first fragment was not seen: `lb_common::ORPHAN_FRAGMENTS_*`.
    pub orphan_fragments: u32,
    /// Idle timeouts of tracked flows.
    pub timeouts: Timeouts,
    /// Virtual services.
    pub vips: Vec<VipConfig>,
    /// VRRP instances; a VIP whose address one of them holds is forwarded only while this
    /// director is that instance's master.
    pub vrrp: Vec<VrrpConfig>,
    /// Groups of VRRP instances that change state together.
    pub vrrp_sync_groups: Vec<SyncGroup>,
    /// Flow-state sync with the other directors, if configured.
    pub sync: Option<SyncConfig>,
    /// Where Prometheus `/metrics` is served (`None`: `[metrics] enabled = false`).
    pub metrics: Option<std::net::SocketAddr>,
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

/// Backend selection algorithm, as ipvsadm's `-s` (see `lb-ebpf/src/select.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Weighted Maglev consistent hashing on the 5-tuple (`mh`).
    Maglev,
    /// Source hashing: a client address always reaches the same backend.
    SourceHash,
    /// Destination hashing: the VIP address decides.
    DestinationHash,
    /// Round robin.
    RoundRobin,
    /// Weighted round robin.
    WeightedRoundRobin,
    /// Least connections.
    LeastConnections,
    /// Weighted least connections.
    WeightedLeastConnections,
}

impl Scheduler {
    /// Every scheduler with the name the config and `lbd status` use, and its aliases.
    pub const ALL: [(Scheduler, &'static str, &'static [&'static str]); 7] = [
        (Scheduler::Maglev, "maglev", &["mh"]),
        (Scheduler::SourceHash, "sh", &[]),
        (Scheduler::DestinationHash, "dh", &[]),
        (Scheduler::RoundRobin, "rr", &[]),
        (Scheduler::WeightedRoundRobin, "wrr", &[]),
        (Scheduler::LeastConnections, "lc", &[]),
        (Scheduler::WeightedLeastConnections, "wlc", &[]),
    ];

    /// The scheduler called `name` (or an alias), any case.
    pub fn from_name(name: &str) -> Option<Scheduler> {
        let name = name.to_ascii_lowercase();
        Scheduler::ALL
            .iter()
            .find(|(_, n, aliases)| *n == name || aliases.contains(&name.as_str()))
            .map(|(s, _, _)| *s)
    }

    /// The datapath's `SCHED_*` value.
    pub fn datapath_value(self) -> u32 {
        match self {
            Scheduler::Maglev => lb_common::SCHED_MAGLEV,
            Scheduler::SourceHash => lb_common::SCHED_SH,
            Scheduler::DestinationHash => lb_common::SCHED_DH,
            Scheduler::RoundRobin => lb_common::SCHED_RR,
            Scheduler::WeightedRoundRobin => lb_common::SCHED_WRR,
            Scheduler::LeastConnections => lb_common::SCHED_LC,
            Scheduler::WeightedLeastConnections => lb_common::SCHED_WLC,
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Scheduler::ALL
            .iter()
            .find(|(s, _, _)| s == self)
            .map_or("?", |(_, n, _)| n);
        f.write_str(name)
    }
}

/// A VIP's own `[vip.timeouts]`, each optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipTimeouts {
    pub tcp: Option<Duration>,
    pub tcp_fin: Option<Duration>,
    pub udp: Option<Duration>,
}

/// `persistence_timeout` and `persistence_granularity` (ipvsadm `-p` and `-M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: Duration,
    /// Clients whose addresses agree under this mask (of the VIP's family) share a backend.
    pub netmask: IpAddr,
}

/// One virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipConfig {
    /// IPv4 or IPv6; its backends are of the same family.
    pub address: IpAddr,
    /// Also the real servers' port: DR forwarding never rewrites ports.
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    /// A client keeps its backend across connections (`None`: each connection is
    /// scheduled on its own).
    pub persistence: Option<Persistence>,
    /// The VIP's own idle timeouts (`[vip.timeouts]`); `None` where the global one applies.
    pub timeouts: VipTimeouts,
    pub backends: Vec<BackendConfig>,
    /// The replication role backends must report (needs the redis check).
    pub role: Role,
    /// With `role = "replica"`: the most a replica may lag (`master_last_io_seconds_ago`).
    pub max_lag: Option<Duration>,
    /// What a failed check does to a backend.
    pub on_down: OnDown,
    /// `None`: no check, every backend is up.
    pub check: Option<CheckConfig>,
    /// Where a write VIP learns its master first (`role = "master"` only).
    pub sentinel: Option<SentinelConfig>,
    /// Run when a backend goes up or down (a backend's own win).
    pub notify: Notify,
    /// Takes the VIP's new flows while no backend is up (keepalived's `sorry_server`).
    pub sorry_server: Option<BackendConfig>,
}

impl VipConfig {
    /// The datapath's key for this VIP.
    pub fn key(&self) -> lb_common::VipKey {
        lb_common::VipKey::new(self.address, self.port, self.protocol.number())
    }
}

/// One real server of a VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// Share of new flows; 0 drains (no new flows, tracked flows continue).
    pub weight: u32,
    /// Fixed MAC; otherwise resolved through the neighbour table at start and reload.
    pub mac: Option<[u8; 6]>,
    /// Run when this backend goes up or down, instead of the VIP's.
    pub notify: Notify,
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
        let error = |offset: Option<usize>, key: String, message: String| ConfigError {
            file: file.to_owned(),
            line: offset.map(|o| line_of(text, o)),
            key,
            message: one_line(&message),
        };
        let document = match toml_edit::ImDocument::parse(text) {
            Ok(document) => document,
            Err(err) => {
                let offset = err.span().map(|s| s.start);
                let key = offset
                    .map(|o| keypath::key_path_at(text, o))
                    .unwrap_or_default();
                return Err(ConfigErrors(vec![error(
                    offset,
                    key,
                    err.message().to_owned(),
                )]));
            }
        };
        let (config, problems) = validate::config(document.as_table());
        if problems.is_empty() {
            return Ok(config);
        }
        let mut errors: Vec<ConfigError> = problems
            .into_iter()
            .map(|(offset, key, message)| error(offset, key, message))
            .collect();
        // Line order (stable within a line); errors without a line last.
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(ConfigErrors(errors))
    }

    /// The forwarding group of VIPs at `address`: 1 + the index of the VRRP instance that
    /// holds it, or 0 (always forwarded) when none does.
    pub fn group_of(&self, address: IpAddr) -> u32 {
        let IpAddr::V4(address) = address else {
            return 0;
        };
        self.vrrp
            .iter()
            .position(|v| v.vips.contains(&address))
            .map_or(0, |i| i as u32 + 1)
    }

    /// Kernel memory the connection-tracking tables take: `max_flows` entries each in the
    /// IPv4 table (about 104 bytes an entry: key and value, 40 bytes, plus the LRU hash
    /// element's header and list links) and the IPv6 one (about 128: its key is 24 bytes
    /// longer), allocated whole when the program is loaded. 64 Mi flows take about 14.5 GiB.
    pub fn conntrack_memory_bytes(&self) -> u64 {
        u64::from(self.max_flows) * CONNTRACK_BYTES_PER_FLOW
    }
}

/// An error about the element `element` of `table[index].key` in `file`, found after
/// validation (a host check at start): the line is looked up in the file as it is now.
pub fn element_error(
    file: &Path,
    (table, index, key, element): (&str, usize, &str, usize),
    message: String,
) -> ConfigError {
    let line = std::fs::read_to_string(file).ok().and_then(|text| {
        let document = toml_edit::ImDocument::parse(text.as_str()).ok()?;
        let value = document
            .get(table)?
            .as_array_of_tables()?
            .get(index)?
            .get(key)?
            .as_array()?
            .get(element)?;
        Some(line_of(&text, value.span()?.start))
    });
    ConfigError {
        file: file.to_owned(),
        line,
        key: format!("{table}[{index}].{key}[{element}]"),
        message,
    }
}

/// See [`Config::conntrack_memory_bytes`]: an entry of each family's table.
pub const CONNTRACK_BYTES_PER_FLOW: u64 = 104 + 128;

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// A multi-line message (toml's syntax errors) on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
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

/// Which replication role a VIP's backends must report to take new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Any healthy backend (no `INFO replication` check).
    Any,
    /// `role:master` (a write VIP): never more than one backend at a time.
    Master,
    /// `role:slave` with the link up and no sync in progress (a read VIP).
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Any => "any",
            Role::Master => "master",
            Role::Replica => "replica",
        })
    }
}

/// What happens to a backend that fails its check (or reports the wrong role).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDown {
    /// Out of the ring and retired: its tracked flows are rescheduled at their next packet
    /// (the new backend answers a mid-stream segment with a reset).
    Remove,
    /// Weight 0 (keepalived's `inhibit_on_failure`): no new flows, tracked flows continue.
    Drain,
}

/// Where a secret comes from, so it need not be written in the config file.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    /// Read at every check (first line, trailing newline removed).
    File(PathBuf),
    /// Read from the daemon's environment at every check.
    Env(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Value(_) => f.write_str("Value(<redacted>)"),
            Secret::File(path) => write!(f, "File({})", path.display()),
            Secret::Env(name) => write!(f, "Env({name})"),
        }
    }
}

/// `AUTH` for the redis check: a password, or an ACL user and password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisAuth {
    pub user: Option<String>,
    pub password: Secret,
}

/// What a health check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Connect to `port` (default: the VIP's port), `AUTH`, `PING` expecting `PONG` (and
    /// `INFO` for role-aware and load-aware VIPs).
    Redis {
        auth: Option<RedisAuth>,
        port: Option<u16>,
    },
    /// keepalived's TCP_CHECK: a TCP connect to `port` (default: the VIP's port).
    Tcp { port: Option<u16> },
    /// keepalived's MISC_CHECK: run `argv` (no shell); exit 0 up, 1 down; with
    /// `dynamic_weight`, 2..=255 means up with weight `code - 2` (misc_dynamic).
    Script {
        argv: Vec<String>,
        dynamic_weight: bool,
    },
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Redis { .. } => "redis",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Script { .. } => "script",
        }
    }
}

/// A VIP's health check, with keepalived's knobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// Between checks (`delay_loop`).
    pub interval: Duration,
    /// Bounds one whole check: connect, auth, commands, or the script (`connect_timeout`).
    pub timeout: Duration,
    /// Consecutive failures that take an up backend down (`retry`).
    pub fall: u32,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Between checks while an up backend is failing (`delay_before_retry`).
    pub delay_before_retry: Duration,
    /// Whether a backend takes flows before its first check (default: no).
    pub initially_up: bool,
    /// Scale weights down on loaded backends (redis check only).
    pub load_weights: Option<LoadMetric>,
    /// Drain a backend whose `used_memory` exceeds this share of `maxmemory`, in thousandths
    /// (redis check only).
    pub max_memory_permille: Option<u32>,
}

/// What load-aware weights measure, from `INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMetric {
    /// `connected_clients`: Redis connections are long-lived, so connection counts drift.
    ConnectedClients,
    /// `instantaneous_ops_per_sec`.
    OpsPerSec,
}

/// Redis Sentinel for a write VIP: its answer (`SENTINEL get-master-addr-by-name`, then
/// `+switch-master`) wins over role polling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    pub addresses: Vec<std::net::SocketAddrV4>,
    pub master_name: String,
    pub auth: Option<RedisAuth>,
}

/// Commands run (argv, no shell) when a backend goes up or down, with the backend, the VIP
/// and the reason appended as arguments (keepalived's `notify_up` / `notify_down`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub up: Option<Vec<String>>,
    pub down: Option<Vec<String>>,
}
