//! `lbd realserver setup|check|teardown`: prepares a direct-routing real server, run on the
//! real server itself (never on a director).
//!
//! In DR mode the director rewrites only the Ethernet destination of a frame for VIP:port, so
//! the real server receives a packet still addressed to the VIP. It must therefore hold the
//! VIP locally (on `lo`, as a host route: /32 or /128) while never claiming it on the shared
//! L2 segment, or the switch would send the VIP's traffic to it instead of the director.
//!
//! - [`setup`] sets the ARP sysctls (now, and persisted in a sysctl.d file) and then adds the
//!   VIPs to `lo`. That order leaves no moment where the host answers ARP for a VIP.
//! - [`check`] reports every classic DR mistake it finds, each with the command that fixes it.
//! - [`teardown`] removes the VIPs, then undoes what `setup` did to the sysctls (see there).
//!
//! Every path and the `ip` command come from a [`Host`], so tests run on a temp directory with
//! a fake `ip`; only [`Host::system`] names `/proc` and `/etc`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `setup` persists the ARP sysctls unless told otherwise.
pub const DEFAULT_SYSCTL_FILE: &str = "/etc/sysctl.d/90-lbd-realserver.conf";

/// Runs `ip` with the given arguments and returns its stdout, or an error naming the command.
pub type IpRunner = Box<dyn Fn(&[&str]) -> Result<String, String>>;

/// The pieces of the host the real-server commands read and change.
pub struct Host {
    /// `/proc/sys` of the network namespace to configure (sysctls are per namespace).
    pub proc_sys: PathBuf,
    /// `/proc/net` of that namespace, for `tcp` and `tcp6` (listening sockets).
    pub proc_net: PathBuf,
    /// The sysctl.d file `setup` writes and `teardown` removes.
    pub sysctl_file: PathBuf,
    /// Runs `ip` (`ip -o addr show`, `ip addr add|del`, `ip -4 route show default`).
    pub ip: IpRunner,
}

impl Host {
    /// The running system: the caller's network namespace, the real `ip` binary.
    pub fn system() -> Host {
        Host {
            proc_sys: PathBuf::from("/proc/sys"),
            proc_net: PathBuf::from("/proc/net"),
            sysctl_file: PathBuf::from(DEFAULT_SYSCTL_FILE),
            ip: Box::new(run_ip),
        }
    }

    fn conf_path(&self, interface: &str, name: &str) -> PathBuf {
        self.proc_sys
            .join("net/ipv4/conf")
            .join(interface)
            .join(name)
    }
}

fn run_ip(args: &[&str]) -> Result<String, String> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("running `{command}`: {err} (is iproute2 installed?)"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let hint = if stderr.contains("Operation not permitted") {
            " (run as root)"
        } else {
            ""
        };
        return Err(format!("`{command}` failed: {stderr}{hint}"));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What `setup` or `teardown` did, and what is left for the operator.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Changes made, in order ("added 198.18.0.100/32 to lo").
    pub actions: Vec<String>,
    /// Things not done on purpose, and what the operator should do about them.
    pub notes: Vec<String>,
}

/// One DR mistake found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong and what it breaks.
    pub problem: String,
    /// The command (or edit) that fixes it.
    pub fix: String,
}

/// The result of [`check`]: the CLI prints both lists and exits 1 if `problems` is not empty.
#[derive(Debug, Default)]
pub struct Report {
    /// Things verified to be right.
    pub ok: Vec<String>,
    /// Mistakes found, in the order they are best fixed (ARP sysctls before the VIP).
    pub problems: Vec<Finding>,
}

impl Report {
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    fn problem(&mut self, problem: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Finding {
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// ARP sysctls
// ---------------------------------------------------------------------------------------------

/// The settings LVS-DR documentation prescribes for real servers.
///
/// For both keys the kernel uses the larger of `conf/all/KEY` and `conf/IFACE/KEY` on the
/// interface an ARP request arrives on (or leaves by), so `all` is what protects every interface:
/// with `all=0`, a host with `eth0=0` answers ARP for the VIP on `lo` from `eth0`.
/// `lo` itself never sees ARP; the classic scripts set it anyway, and so do we, to match them.
/// - `arp_ignore=1`: reply only for addresses configured on the receiving interface.
/// - `arp_announce=2`: never use an address of another interface (the VIP) as the sender of
///   our own ARP requests, which would teach neighbours that the VIP lives here.
const ARP_SETTINGS: [(&str, &str, u32); 4] = [
    ("all", "arp_ignore", 1),
    ("all", "arp_announce", 2),
    ("lo", "arp_ignore", 1),
    ("lo", "arp_announce", 2),
];

/// The `sysctl` name of `net.ipv4.conf.IFACE.KEY`; dots in an interface name (VLANs such as
/// `eth0.100`) are written as slashes there.
pub fn sysctl_key(interface: &str, name: &str) -> String {
    format!("net.ipv4.conf.{}.{name}", interface.replace('.', "/"))
}

/// The value the kernel applies on an interface for `arp_ignore`, `arp_announce` and
/// `rp_filter`: the larger of `all` and the interface's own.
pub fn effective_value(all: u32, interface: u32) -> u32 {
    all.max(interface)
}

fn read_sysctl(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path).map_err(|err| io_error("reading", path, err))?;
    text.trim().parse().map_err(|_| {
        format!(
            "reading {}: not a number: {:?}",
            path.display(),
            text.trim()
        )
    })
}

fn write_sysctl(path: &Path, value: u32) -> Result<(), String> {
    std::fs::write(path, format!("{value}\n")).map_err(|err| io_error("writing", path, err))
}

fn io_error(action: &str, path: &Path, err: io::Error) -> String {
    let hint = match err.kind() {
        io::ErrorKind::PermissionDenied => " (run as root)",
        io::ErrorKind::ReadOnlyFilesystem => {
            " (read-only: in a container, set it for the container's network namespace from outside)"
        }
        _ => "",
    };
    format!("{action} {}: {err}{hint}", path.display())
}

/// Interfaces of the namespace, from `net/ipv4/conf`, without the `all`/`default`
/// pseudo-entries and without `lo` (which receives no ARP).
fn arp_interfaces(host: &Host) -> Result<Vec<String>, String> {
    let dir = host.proc_sys.join("net/ipv4/conf");
    let entries = std::fs::read_dir(&dir).map_err(|err| io_error("listing", &dir, err))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !matches!(name.as_str(), "all" | "default" | "lo"))
        .collect();
    names.sort();
    Ok(names)
}

/// One line of lbd's sysctl.d file: the value lbd persisted and the value before `setup`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PersistedSetting {
    interface: String,
    name: String,
    value: u32,
    /// `None` when the file lost its `# lbd-previous:` line: teardown then leaves the value.
    previous: Option<u32>,
}

const PREVIOUS_MARK: &str = "# lbd-previous:";

fn render_sysctl_file(settings: &[PersistedSetting]) -> String {
    let mut text = String::from(
        "# Written by `lbd realserver setup`; `lbd realserver teardown` removes it and restores\n\
         # the values on the lbd-previous lines. A direct-routing real server holds the VIP on lo\n\
         # and must not answer ARP for it.\n",
    );
    for setting in settings {
        let key = sysctl_key(&setting.interface, &setting.name);
        if let Some(previous) = setting.previous {
            let _ = writeln!(text, "{PREVIOUS_MARK} {key} = {previous}");
        }
        let _ = writeln!(text, "{key} = {}", setting.value);
    }
    text
}

/// Reads back lbd's own file. Only the four ARP settings are accepted, so a hand-edited file
/// cannot make teardown write anywhere else under /proc/sys.
fn parse_sysctl_file(text: &str) -> Vec<PersistedSetting> {
    let key_value = |line: &str| -> Option<(String, u32)> {
        let (key, value) = line.split_once('=')?;
        Some((key.trim().to_owned(), value.trim().parse().ok()?))
    };
    let mut values = BTreeMap::new();
    let mut previous = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix(PREVIOUS_MARK) {
            if let Some((key, value)) = key_value(rest) {
                previous.insert(key, value);
            }
        } else if !line.starts_with('#')
            && !line.starts_with(';')
            && let Some((key, value)) = key_value(line)
        {
            values.insert(key, value);
        }
    }
    ARP_SETTINGS
        .iter()
        .filter_map(|(interface, name, _)| {
            let key = sysctl_key(interface, name);
            Some(PersistedSetting {
                interface: (*interface).to_owned(),
                name: (*name).to_owned(),
                value: *values.get(&key)?,
                previous: previous.get(&key).copied(),
            })
        })
        .collect()
}

fn read_sysctl_file(host: &Host) -> Result<Option<Vec<PersistedSetting>>, String> {
    match std::fs::read_to_string(&host.sysctl_file) {
        Ok(text) => Ok(Some(parse_sysctl_file(&text))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("reading", &host.sysctl_file, err)),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file for
/// systemd-sysctl to apply at boot.
fn write_file_atomically(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|err| io_error("creating", parent, err))?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text).map_err(|err| io_error("writing", &temporary, err))?;
    std::fs::rename(&temporary, path).map_err(|err| io_error("renaming to", path, err))
}

// ---------------------------------------------------------------------------------------------
// Addresses (`ip -o addr show`)
// ---------------------------------------------------------------------------------------------

/// One address from `ip -o addr show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl InterfaceAddress {
    /// `ADDR/PREFIX`, as `ip addr del` wants it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix_len)
    }
}

/// Parses `ip -o addr show`: one address per line,
/// `2: eth0    inet 192.0.2.11/24 brd 192.0.2.255 scope global eth0\       valid_lft ...`.
/// Lines it does not understand are skipped: they cannot hold an address we look for.
pub fn parse_ip_addr_show(output: &str) -> Vec<InterfaceAddress> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _index = fields.next()?;
            // `veth0@if5` in some iproute2 versions; the name is what `dev` takes.
            let interface = fields.next()?.split('@').next()?.trim_end_matches(':');
            let family = fields.next()?;
            if family != "inet" && family != "inet6" {
                return None;
            }
            // A point-to-point address reads `10.0.0.1 peer 10.0.0.2/32`: no prefix on ours.
            let local = fields.next()?;
            let (addr, prefix_len) = match local.split_once('/') {
                Some((addr, prefix)) => (addr.parse().ok()?, prefix.parse().ok()?),
                None => {
                    let addr: IpAddr = local.parse().ok()?;
                    (addr, host_prefix_len(addr))
                }
            };
            Some(InterfaceAddress {
                interface: interface.to_owned(),
                addr,
                prefix_len,
            })
        })
        .collect()
}

fn host_prefix_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `ADDR/32` or `ADDR/128`: the only safe form of a VIP on `lo`. A wider prefix makes the
/// whole subnet local, so the real server stops reaching its neighbours in it (seed 004).
fn host_cidr(addr: IpAddr) -> String {
    format!("{addr}/{}", host_prefix_len(addr))
}

fn list_addresses(host: &Host) -> Result<Vec<InterfaceAddress>, String> {
    (host.ip)(&["-o", "addr", "show"]).map(|output| parse_ip_addr_show(&output))
}

/// Interfaces named by `dev` in `ip -4 route show default` (several with ECMP next hops).
pub fn parse_default_route_devices(output: &str) -> Vec<String> {
    let mut devices: Vec<String> = Vec::new();
    for line in output.lines() {
        let mut fields = line.split_whitespace();
        while let Some(field) = fields.next() {
            if field == "dev"
                && let Some(device) = fields.next()
                && !devices.iter().any(|known| known == device)
            {
                devices.push(device.to_owned());
            }
        }
    }
    devices
}

fn validate_vips(vips: &[IpAddr]) -> Result<(), String> {
    if vips.is_empty() {
        return Err("no VIP given (--vip ADDR[,ADDR...])".to_owned());
    }
    for vip in vips {
        if vip.is_unspecified() || vip.is_loopback() || vip.is_multicast() {
            return Err(format!(
                "{vip} cannot be a VIP: it is unspecified, loopback or multicast"
            ));
        }
    }
    Ok(())
}

fn is_loopback_interface(address: &InterfaceAddress) -> bool {
    address.interface == "lo"
}

// ---------------------------------------------------------------------------------------------
// Listening sockets (/proc/net/tcp, /proc/net/tcp6)
// ---------------------------------------------------------------------------------------------

/// A TCP socket in LISTEN state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
}

const TCP_LISTEN: &str = "0A";

/// Parses `/proc/net/tcp` or `/proc/net/tcp6` and keeps the LISTEN sockets.
///
/// The local address is `ADDR:PORT` in hex. The port is the number itself; the address is the
/// in-memory (network order) bytes printed as native-endian 32-bit words, so each word reads
/// byte-reversed on little-endian hosts: `0100007F` is 127.0.0.1.
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1) // the header
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let local = fields.next()?;
            let _remote = fields.next()?;
            if fields.next()? != TCP_LISTEN {
                return None;
            }
            let (addr_hex, port_hex) = local.split_once(':')?;
            Some(Listener {
                addr: parse_proc_net_addr(addr_hex)?,
                port: u16::from_str_radix(port_hex, 16).ok()?,
            })
        })
        .collect()
}

fn parse_proc_net_addr(hex: &str) -> Option<IpAddr> {
    let word = |index: usize| -> Option<[u8; 4]> {
        let digits = hex.get(index * 8..index * 8 + 8)?;
        Some(u32::from_str_radix(digits, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for index in 0..4 {
                bytes[index * 4..index * 4 + 4].copy_from_slice(&word(index)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// How a listener serves `vip:port`, if it does.
fn serves(listener: &Listener, vip: IpAddr, port: u16) -> Option<&'static str> {
    if listener.port != port {
        return None;
    }
    match (vip, listener.addr) {
        (_, addr) if addr == vip => Some("on the VIP"),
        (IpAddr::V4(_), IpAddr::V4(addr)) if addr.is_unspecified() => Some("on 0.0.0.0"),
        (IpAddr::V4(vip), IpAddr::V6(addr)) if addr.to_ipv4_mapped() == Some(vip) => {
            Some("on the VIP (IPv4-mapped)")
        }
        // A dual-stack [::] socket takes IPv4 too, unless it set IPV6_V6ONLY, which
        // /proc/net/tcp6 does not show.
        (IpAddr::V4(_), IpAddr::V6(addr)) if addr.is_unspecified() => {
            Some("on [::] (IPv4 included unless the socket is IPV6_V6ONLY)")
        }
        (IpAddr::V6(_), IpAddr::V6(addr)) if addr.is_unspecified() => Some("on [::]"),
        _ => None,
    }
}

fn read_listeners(host: &Host) -> Result<Vec<Listener>, String> {
    let mut listeners = Vec::new();
    for name in ["tcp", "tcp6"] {
        let path = host.proc_net.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => listeners.extend(parse_proc_net_tcp(&text)),
            // No tcp6 when IPv6 is disabled: no IPv6 listener either.
            Err(err) if name == "tcp6" && err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error("reading", &path, err)),
        }
    }
    Ok(listeners)
}

fn socket_label(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(addr) => format!("{addr}:{port}"),
        IpAddr::V6(addr) => format!("[{addr}]:{port}"),
    }
}

// ---------------------------------------------------------------------------------------------
// setup
// ---------------------------------------------------------------------------------------------

/// Prepares this host as a DR real server for `vips`. Idempotent.
///
/// With an IPv4 VIP: raises the ARP sysctls to the prescribed values (never lowers a stricter
/// value already set), writes them to `host.sysctl_file` with the values found before lbd's
/// first setup, and only then adds each VIP to `lo` as a host route. IPv6 VIPs need no sysctl:
/// Linux answers a neighbour solicitation only for addresses of the interface it arrives on,
/// and picks the solicitation's source among the outgoing interface's addresses.
///
/// Refuses, before changing anything, when a VIP sits on another interface than `lo`: that
/// host answers ARP/ND for it (it looks like a director, or a half-migrated real server).
pub fn setup(host: &Host, vips: &[IpAddr]) -> Result<Outcome, String> {
    validate_vips(vips)?;
    let addresses = list_addresses(host)?;
    for vip in vips {
        if let Some(elsewhere) = addresses
            .iter()
            .find(|address| address.addr == *vip && !is_loopback_interface(address))
        {
            return Err(format!(
                "VIP {vip} is on {}: this host would answer ARP/ND for it and take its traffic \
                 from the director. Remove it first (ip addr del {} dev {}), or run setup on a \
                 real server, not on a director",
                elsewhere.interface,
                elsewhere.cidr(),
                elsewhere.interface
            ));
        }
    }

    let mut outcome = Outcome::default();
    match setup_steps(host, vips, &addresses, &mut outcome) {
        Ok(()) => Ok(outcome),
        Err(err) => Err(with_progress(err, &outcome)),
    }
}

fn setup_steps(
    host: &Host,
    vips: &[IpAddr],
    addresses: &[InterfaceAddress],
    outcome: &mut Outcome,
) -> Result<(), String> {
    // Sysctls first: from the moment a VIP is on lo, every interface must already refuse ARP.
    if vips.iter().any(IpAddr::is_ipv4) {
        set_arp_sysctls(host, outcome)?;
    }
    for vip in vips {
        let on_lo: Vec<&InterfaceAddress> = addresses
            .iter()
            .filter(|address| address.addr == *vip && is_loopback_interface(address))
            .collect();
        let wanted = host_cidr(*vip);
        // A VIP on lo with a wider prefix makes its whole subnet local: it goes, even beside
        // the host-prefix one.
        for wrong in on_lo
            .iter()
            .filter(|address| address.prefix_len != host_prefix_len(*vip))
        {
            let cidr = wrong.cidr();
            (host.ip)(&["addr", "del", &cidr, "dev", "lo"])?;
            outcome.actions.push(format!(
                "removed {cidr} from lo (a VIP on lo must be {wanted})"
            ));
        }
        if on_lo
            .iter()
            .any(|address| address.prefix_len == host_prefix_len(*vip))
        {
            outcome.notes.push(format!("{wanted} already on lo"));
            continue;
        }
        (host.ip)(&["addr", "add", &wanted, "dev", "lo"])?;
        outcome.actions.push(format!("added {wanted} to lo"));
    }
    let commands: Vec<String> = vips
        .iter()
        .map(|vip| format!("ip addr add {} dev lo", host_cidr(*vip)))
        .collect();
    outcome.notes.push(format!(
        "the VIP on lo does not survive a reboot (the sysctls do): run `lbd realserver setup` \
         at boot, or add `{}` to this host's network configuration",
        commands.join("; ")
    ));
    Ok(())
}

fn set_arp_sysctls(host: &Host, outcome: &mut Outcome) -> Result<(), String> {
    // Keep the values from before lbd's first setup, so teardown restores those and not ours.
    let earlier = read_sysctl_file(host)?.unwrap_or_default();
    let mut persisted = Vec::new();
    for (interface, name, wanted) in ARP_SETTINGS {
        let path = host.conf_path(interface, name);
        let current = read_sysctl(&path)?;
        let value = current.max(wanted);
        if value != current {
            write_sysctl(&path, value)?;
            outcome.actions.push(format!(
                "set {} = {value} (was {current})",
                sysctl_key(interface, name)
            ));
        }
        let previous = match earlier
            .iter()
            .find(|setting| setting.interface == interface && setting.name == name)
        {
            Some(setting) => setting.previous,
            None => Some(current),
        };
        persisted.push(PersistedSetting {
            interface: interface.to_owned(),
            name: name.to_owned(),
            value,
            previous,
        });
    }
    let text = render_sysctl_file(&persisted);
    let unchanged = std::fs::read_to_string(&host.sysctl_file).is_ok_and(|old| old == text);
    if !unchanged {
        write_file_atomically(&host.sysctl_file, &text)?;
        outcome
            .actions
            .push(format!("wrote {}", host.sysctl_file.display()));
    }
    Ok(())
}

fn with_progress(err: String, outcome: &Outcome) -> String {
    if outcome.actions.is_empty() {
        err
    } else {
        format!("{err} (already done: {})", outcome.actions.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// teardown
// ---------------------------------------------------------------------------------------------

/// Undoes [`setup`] for `vips`: removes them from `lo` first (so no VIP is ever held with ARP
/// unprotected), then, only when no other IPv4 address than 127/8 remains on `lo`, removes
/// lbd's sysctl.d file and restores the values recorded there. A value is restored only if
/// it still is the one lbd set: someone who changed it since meant it. Without lbd's file,
/// lbd set nothing, so the sysctls are left alone.
pub fn teardown(host: &Host, vips: &[IpAddr]) -> Result<Outcome, String> {
    validate_vips(vips)?;
    let mut outcome = Outcome::default();
    match teardown_steps(host, vips, &mut outcome) {
        Ok(()) => Ok(outcome),
        Err(err) => Err(with_progress(err, &outcome)),
    }
}

fn teardown_steps(host: &Host, vips: &[IpAddr], outcome: &mut Outcome) -> Result<(), String> {
    let addresses = list_addresses(host)?;
    for vip in vips {
        let on_lo: Vec<&InterfaceAddress> = addresses
            .iter()
            .filter(|address| address.addr == *vip && is_loopback_interface(address))
            .collect();
        if on_lo.is_empty() {
            outcome.notes.push(format!("{vip} was not on lo"));
        }
        for address in on_lo {
            let cidr = address.cidr();
            (host.ip)(&["addr", "del", &cidr, "dev", "lo"])?;
            outcome.actions.push(format!("removed {cidr} from lo"));
        }
    }

    let Some(persisted) = read_sysctl_file(host)? else {
        outcome.notes.push(format!(
            "ARP sysctls left as they are: lbd did not set them ({} does not exist)",
            host.sysctl_file.display()
        ));
        return Ok(());
    };
    let remaining: Vec<String> = list_addresses(host)?
        .iter()
        .filter(|address| is_loopback_interface(address))
        .filter(|address| matches!(address.addr, IpAddr::V4(v4) if !v4.is_loopback()))
        .map(InterfaceAddress::cidr)
        .collect();
    if !remaining.is_empty() {
        outcome.notes.push(format!(
            "ARP sysctls and {} kept: lo still holds {}, which needs them",
            host.sysctl_file.display(),
            remaining.join(", ")
        ));
        return Ok(());
    }
    for setting in &persisted {
        let key = sysctl_key(&setting.interface, &setting.name);
        let path = host.conf_path(&setting.interface, &setting.name);
        let current = read_sysctl(&path)?;
        match setting.previous {
            Some(previous) if current == setting.value && previous != current => {
                write_sysctl(&path, previous)?;
                outcome
                    .actions
                    .push(format!("restored {key} = {previous} (was {current})"));
            }
            Some(_) if current == setting.value => {}
            Some(_) => outcome.notes.push(format!(
                "left {key} = {current}: changed since lbd set it to {}",
                setting.value
            )),
            None => outcome.notes.push(format!(
                "left {key} = {current}: no previous value recorded"
            )),
        }
    }
    std::fs::remove_file(&host.sysctl_file)
        .map_err(|err| io_error("removing", &host.sysctl_file, err))?;
    outcome
        .actions
        .push(format!("removed {}", host.sysctl_file.display()));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

/// Looks for the classic DR mistakes on this host for `vips` (and, with `port`, for a
/// listener). Never changes anything.
pub fn check(host: &Host, vips: &[IpAddr], port: Option<u16>) -> Report {
    let mut report = Report::default();
    if let Err(err) = validate_vips(vips) {
        report.problem(
            err,
            "pass the VIPs the director balances: --vip ADDR[,ADDR...]",
        );
        return report;
    }
    let has_ipv4_vip = vips.iter().any(IpAddr::is_ipv4);
    // ARP first: fixing it before adding a missing VIP is the safe order.
    if has_ipv4_vip {
        check_arp_sysctls(host, &mut report);
    }
    match list_addresses(host) {
        Ok(addresses) => {
            check_vip_placement(&addresses, vips, &mut report);
            if has_ipv4_vip {
                check_rp_filter(host, &addresses, &mut report);
            }
        }
        Err(err) => report.problem(
            format!("cannot list addresses: {err}"),
            "run the check where `ip -o addr show` works (iproute2 installed)",
        ),
    }
    if let Some(port) = port {
        check_listeners(host, vips, port, &mut report);
    }
    report
}

fn check_arp_sysctls(host: &Host, report: &mut Report) {
    let interfaces = match arp_interfaces(host) {
        Ok(interfaces) => interfaces,
        Err(err) => {
            report.problem(
                format!("cannot list interfaces: {err}"),
                "run the check on the real server itself, with /proc mounted",
            );
            return;
        }
    };
    let settings = [
        (
            "arp_ignore",
            1,
            "the host answers ARP for the VIP on lo from these interfaces, pulling the VIP's \
             traffic away from the director",
        ),
        (
            "arp_announce",
            2,
            "ARP requests sent from these interfaces may carry the VIP as sender address, \
             teaching neighbours that the VIP lives here",
        ),
    ];
    for (name, wanted, consequence) in settings {
        let all = match read_sysctl(&host.conf_path("all", name)) {
            Ok(value) => value,
            Err(err) => {
                report.problem(err, "run the check as a user who can read /proc/sys");
                continue;
            }
        };
        let mut weak = Vec::new();
        for interface in &interfaces {
            match read_sysctl(&host.conf_path(interface, name)) {
                Ok(own) if effective_value(all, own) < wanted => {
                    weak.push(format!("{interface} (all={all}, {interface}={own})"));
                }
                Ok(_) => {}
                // Interfaces come and go between listing and reading; skip the vanished ones.
                Err(_) => {}
            }
        }
        if interfaces.is_empty() && all < wanted {
            weak.push(format!("all={all}"));
        }
        if weak.is_empty() {
            report.ok.push(format!(
                "{name} >= {wanted} on every interface (all={all}; the kernel uses max(all, interface))"
            ));
        } else {
            report.problem(
                format!(
                    "{name} below {wanted} on {} (effective value = max(all, interface)): {consequence}",
                    weak.join(", ")
                ),
                format!(
                    "sysctl -w {}={wanted} {}={wanted}, and persist both in /etc/sysctl.d \
                     (`lbd realserver setup` does both)",
                    sysctl_key("all", name),
                    sysctl_key("lo", name)
                ),
            );
        }
    }
}

fn check_vip_placement(addresses: &[InterfaceAddress], vips: &[IpAddr], report: &mut Report) {
    for vip in vips {
        let wanted = host_cidr(*vip);
        let mut on_lo = false;
        for address in addresses.iter().filter(|address| address.addr == *vip) {
            let cidr = address.cidr();
            if !is_loopback_interface(address) {
                report.problem(
                    format!(
                        "VIP {vip} is on {} as {cidr}: this host answers ARP/ND for it there and \
                         takes the VIP's traffic from the director",
                        address.interface
                    ),
                    format!("ip addr del {cidr} dev {}", address.interface),
                );
            } else if address.prefix_len != host_prefix_len(*vip) {
                on_lo = true;
                report.problem(
                    format!(
                        "VIP {vip} is on lo as {cidr}: a prefix wider than the host's makes its \
                         whole subnet local, so this host can no longer reach its neighbours there"
                    ),
                    format!("ip addr del {cidr} dev lo && ip addr add {wanted} dev lo"),
                );
            } else {
                on_lo = true;
                report.ok.push(format!("{wanted} is on lo"));
            }
        }
        if !on_lo {
            report.problem(
                format!(
                    "VIP {vip} is not on lo: this host drops the packets the director forwards \
                     to it (they are addressed to the VIP)"
                ),
                format!("ip addr add {wanted} dev lo"),
            );
        }
    }
}

/// Strict reverse-path filtering (effective `rp_filter` = 1) drops a packet when the route
/// back to its source does not leave by the interface it came in on. The director forwards
/// the client's packet unchanged, so the source is the client: if the director reaches this
/// host over `eth1` while the route to clients leaves by `eth0`, every forwarded request is
/// dropped on `eth1` before Redis sees it (nothing is logged; no reply ever leaves). Loose mode
/// (2) only asks for some route back, which keeps the anti-spoofing intent.
fn check_rp_filter(host: &Host, addresses: &[InterfaceAddress], report: &mut Report) {
    let all = match read_sysctl(&host.conf_path("all", "rp_filter")) {
        Ok(value) => value,
        Err(err) => {
            report.problem(err, "run the check as a user who can read /proc/sys");
            return;
        }
    };
    // Director frames arrive on an interface holding this host's IPv4 address (the director
    // resolves it with ARP).
    let mut ipv4_interfaces: Vec<&str> = addresses
        .iter()
        .filter(|address| address.addr.is_ipv4() && !is_loopback_interface(address))
        .map(|address| address.interface.as_str())
        .collect();
    ipv4_interfaces.sort_unstable();
    ipv4_interfaces.dedup();
    let default_devices = (host.ip)(&["-4", "route", "show", "default"])
        .map(|output| parse_default_route_devices(&output))
        .unwrap_or_default();

    let mut risky = Vec::new();
    let mut harmless = Vec::new();
    for interface in &ipv4_interfaces {
        let Ok(own) = read_sysctl(&host.conf_path(interface, "rp_filter")) else {
            continue;
        };
        if effective_value(all, own) != 1 {
            continue;
        }
        let strict = format!("{interface} (all={all}, {interface}={own})");
        // Replies to clients follow the default route: strictness on that interface is
        // harmless. Without a default route, a single interface is the only way back.
        let carries_route_to_clients = if default_devices.is_empty() {
            ipv4_interfaces.len() == 1
        } else {
            default_devices.iter().any(|device| device == interface)
        };
        if carries_route_to_clients {
            harmless.push(strict);
        } else {
            risky.push(strict);
        }
    }
    if !harmless.is_empty() {
        report.ok.push(format!(
            "rp_filter strict on {}, which carries the route to clients: forwarded requests pass",
            harmless.join(", ")
        ));
    }
    if risky.is_empty() {
        if harmless.is_empty() {
            report
                .ok
                .push(format!("rp_filter not strict on any interface (all={all})"));
        }
    } else {
        report.problem(
            format!(
                "rp_filter strict (effective value = max(all, interface) = 1) on {}, which does \
                 not carry the route to clients: if the director forwards to this host over it, \
                 the kernel drops every request (the route back to the client leaves by another \
                 interface)",
                risky.join(", ")
            ),
            format!(
                "sysctl -w {}=2 (loose mode; being a maximum, `all` covers every interface), and \
                 persist it in /etc/sysctl.d",
                sysctl_key("all", "rp_filter")
            ),
        );
    }
}

fn check_listeners(host: &Host, vips: &[IpAddr], port: u16, report: &mut Report) {
    let listeners = match read_listeners(host) {
        Ok(listeners) => listeners,
        Err(err) => {
            report.problem(
                format!("cannot list listening sockets: {err}"),
                "run the check on the real server itself, with /proc mounted",
            );
            return;
        }
    };
    let on_port: Vec<String> = listeners
        .iter()
        .filter(|listener| listener.port == port)
        .map(|listener| socket_label(listener.addr, listener.port))
        .collect();
    if on_port.is_empty() {
        let vip_list: Vec<String> = vips.iter().map(IpAddr::to_string).collect();
        let all_addresses = if vips.iter().any(IpAddr::is_ipv6) {
            "bind 0.0.0.0 ::"
        } else {
            "bind 0.0.0.0"
        };
        report.problem(
            format!("nothing listens on TCP port {port}"),
            format!(
                "start the service (e.g. systemctl start redis-server) with `port {port}` and \
                 `{all_addresses}` (or a bind list including {}) in redis.conf",
                vip_list.join(" ")
            ),
        );
        return;
    }
    for vip in vips {
        let target = socket_label(*vip, port);
        if let Some(how) = listeners
            .iter()
            .find_map(|listener| serves(listener, *vip, port))
        {
            report.ok.push(format!("{target}: a service listens {how}"));
        } else {
            report.problem(
                format!(
                    "nothing listens on {target}: port {port} is bound only on {} and DR \
                     delivers packets addressed to the VIP",
                    on_port.join(", ")
                ),
                format!(
                    "add {vip} to the service's bind list (redis.conf: `bind ... {vip}`, the VIP \
                     must be on lo first) or bind all addresses, then restart the service"
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const VIP: &str = "198.18.0.100";
    const VIP6: &str = "2001:db8::100";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    // ----- parsing -----

    const IP_ADDR_SHOW: &str = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet 198.18.0.100/32 scope global lo:0\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host noprefixroute \\       valid_lft forever preferred_lft forever
2: eth0    inet 192.0.2.11/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet6 fe80::fc:ff:fe00:1/64 scope link \\       valid_lft forever preferred_lft forever
5: veth0@if4    inet 10.9.0.1/30 scope global veth0\\       valid_lft forever preferred_lft forever
6: tun0    inet 10.8.0.1 peer 10.8.0.2/32 scope global tun0\\       valid_lft forever preferred_lft forever
";

    #[test]
    fn parses_ip_addr_show() {
        let addresses = parse_ip_addr_show(IP_ADDR_SHOW);
        let found: Vec<(String, String)> = addresses
            .iter()
            .map(|address| (address.interface.clone(), address.cidr()))
            .collect();
        let expected = [
            ("lo", "127.0.0.1/8"),
            ("lo", "198.18.0.100/32"),
            ("lo", "::1/128"),
            ("eth0", "192.0.2.11/24"),
            ("eth0", "fe80::fc:ff:fe00:1/64"),
            ("veth0", "10.9.0.1/30"),
            ("tun0", "10.8.0.1/32"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(interface, cidr)| (interface.to_string(), cidr.to_string()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn skips_garbage_in_ip_output() {
        assert!(parse_ip_addr_show("\nnonsense\n3: eth1 inet notanaddress/24\n").is_empty());
    }

    #[test]
    fn parses_default_route_devices() {
        let single = "default via 192.0.2.1 dev eth0 proto static metric 100\n";
        assert_eq!(parse_default_route_devices(single), ["eth0"]);
        let ecmp = "default proto static metric 100 \n\tnexthop via 192.0.2.1 dev eth0 weight 1 \
                    \n\tnexthop via 198.51.100.1 dev eth1 weight 1 \n";
        assert_eq!(parse_default_route_devices(ecmp), ["eth0", "eth1"]);
        assert!(parse_default_route_devices("").is_empty());
    }

    // Samples as a little-endian host prints them.
    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 23456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   2: 0B0200C0:18EB 0C0200C0:D431 01 00000000:00000000 02:000A7D6E 00000000   999        0 34567 2 0000000000000000 20 4 30 10 -1
   3: 640012C6:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 45678 1 0000000000000000 100 0 0 10 0
";
    const PROC_NET_TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 23457 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF0000640012C6:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12347 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000000010000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12348 1 0000000000000000 100 0 0 10 0
";

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_proc_net_tcp_listeners() {
        let listeners = parse_proc_net_tcp(PROC_NET_TCP);
        let expected = [
            ("0.0.0.0", 6379),
            ("127.0.0.1", 631),
            // the ESTABLISHED line (st 01) is not a listener
            ("198.18.0.100", 8080),
        ];
        let expected: Vec<Listener> = expected
            .iter()
            .map(|(addr, port)| Listener {
                addr: ip(addr),
                port: *port,
            })
            .collect();
        assert_eq!(listeners, expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_proc_net_tcp6_listeners() {
        let listeners = parse_proc_net_tcp(PROC_NET_TCP6);
        let expected = [
            ("::", 6379),
            ("::1", 631),
            ("::ffff:198.18.0.100", 8081),
            ("2001:db8::100", 8082),
        ];
        let expected: Vec<Listener> = expected
            .iter()
            .map(|(addr, port)| Listener {
                addr: ip(addr),
                port: *port,
            })
            .collect();
        assert_eq!(listeners, expected);
    }

    #[test]
    fn parses_this_machines_proc_net_tcp_without_panicking() {
        for name in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(name) {
                for listener in parse_proc_net_tcp(&text) {
                    assert_ne!(listener.port, 0, "{name}: a listener on port 0");
                }
            }
        }
    }

    #[test]
    fn listener_matching_rules() {
        let listener = |addr: &str, port| Listener {
            addr: ip(addr),
            port,
        };
        assert!(serves(&listener("0.0.0.0", 6379), ip(VIP), 6379).is_some());
        assert!(serves(&listener(VIP, 6379), ip(VIP), 6379).is_some());
        assert!(serves(&listener("::ffff:198.18.0.100", 6379), ip(VIP), 6379).is_some());
        assert!(serves(&listener("::", 6379), ip(VIP), 6379).is_some());
        assert!(serves(&listener("::", 6379), ip(VIP6), 6379).is_some());
        assert!(serves(&listener("0.0.0.0", 6379), ip(VIP6), 6379).is_none());
        assert!(serves(&listener("192.0.2.11", 6379), ip(VIP), 6379).is_none());
        assert!(serves(&listener(VIP, 6380), ip(VIP), 6379).is_none());
    }

    #[test]
    fn effective_value_is_the_larger_of_all_and_interface() {
        assert_eq!(effective_value(0, 0), 0);
        assert_eq!(effective_value(1, 0), 1);
        assert_eq!(effective_value(0, 2), 2);
        assert_eq!(effective_value(2, 1), 2);
    }

    #[test]
    fn sysctl_keys_write_vlan_dots_as_slashes() {
        assert_eq!(
            sysctl_key("all", "arp_ignore"),
            "net.ipv4.conf.all.arp_ignore"
        );
        assert_eq!(
            sysctl_key("eth0.100", "rp_filter"),
            "net.ipv4.conf.eth0/100.rp_filter"
        );
    }

    #[test]
    fn sysctl_file_round_trips_and_ignores_foreign_keys() {
        let settings = vec![
            PersistedSetting {
                interface: "all".into(),
                name: "arp_ignore".into(),
                value: 1,
                previous: Some(0),
            },
            PersistedSetting {
                interface: "lo".into(),
                name: "arp_announce".into(),
                value: 2,
                previous: None,
            },
        ];
        let text = render_sysctl_file(&settings);
        assert!(text.starts_with("# Written by `lbd realserver setup`"));
        assert_eq!(parse_sysctl_file(&text), settings);
        let hostile =
            format!("{text}kernel.core_pattern = 1\n{PREVIOUS_MARK} vm.swappiness = 60\n");
        assert_eq!(parse_sysctl_file(&hostile), settings);
    }

    #[test]
    fn io_errors_say_what_to_do() {
        let path = Path::new("/proc/sys/net/ipv4/conf/all/arp_ignore");
        let denied = io_error(
            "writing",
            path,
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(denied.starts_with("writing /proc/sys/net/ipv4/conf/all/arp_ignore: "));
        assert!(denied.ends_with("(run as root)"), "{denied}");
    }

    #[test]
    fn rejects_vips_that_cannot_be_vips() {
        assert!(validate_vips(&[]).is_err());
        for bad in ["0.0.0.0", "127.0.0.2", "::1", "224.0.0.18", "::"] {
            assert!(validate_vips(&[ip(bad)]).is_err(), "{bad}");
        }
        assert!(validate_vips(&[ip(VIP), ip(VIP6)]).is_ok());
    }

    // ----- a fake host -----

    /// The fake kernel's addresses and routes, changed by the fake `ip`.
    #[derive(Default)]
    struct FakeNetwork {
        addresses: Vec<InterfaceAddress>,
        default_route_devices: Vec<String>,
        /// Every `ip` invocation, joined with spaces.
        commands: Vec<String>,
        /// `all/arp_ignore` as it was when each `ip addr add` ran, to check the order.
        arp_ignore_at_add: Vec<String>,
    }

    impl FakeNetwork {
        fn render_addr_show(&self) -> String {
            let mut text = String::new();
            for (index, address) in self.addresses.iter().enumerate() {
                let family = if address.addr.is_ipv4() {
                    "inet"
                } else {
                    "inet6"
                };
                let _ = writeln!(
                    text,
                    "{}: {}    {family} {} scope global {}\\       valid_lft forever preferred_lft forever",
                    index + 1,
                    address.interface,
                    address.cidr(),
                    address.interface
                );
            }
            text
        }
    }

    /// A temp directory with /proc/sys, /proc/net and /etc/sysctl.d, removed on drop.
    struct FakeHost {
        root: PathBuf,
        host: Host,
        network: Rc<RefCell<FakeNetwork>>,
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    static NEXT_ROOT: AtomicUsize = AtomicUsize::new(0);

    impl FakeHost {
        /// A freshly installed host: lo and eth0 (192.0.2.11/24, default route), every ARP and
        /// rp_filter sysctl 0, nothing listening, no lbd file.
        fn new() -> FakeHost {
            let root = std::env::temp_dir().join(format!(
                "lbd-realserver-test-{}-{}",
                std::process::id(),
                NEXT_ROOT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&root);
            let proc_sys = root.join("proc/sys");
            let proc_net = root.join("proc/net");
            std::fs::create_dir_all(&proc_net).expect("create proc/net");
            std::fs::create_dir_all(root.join("etc/sysctl.d")).expect("create sysctl.d");
            let network = Rc::new(RefCell::new(FakeNetwork::default()));
            let fake_ip = {
                let network = Rc::clone(&network);
                let arp_ignore_path = proc_sys.join("net/ipv4/conf/all/arp_ignore");
                move |args: &[&str]| -> Result<String, String> {
                    let mut network = network.borrow_mut();
                    network.commands.push(args.join(" "));
                    match args {
                        ["-o", "addr", "show"] => Ok(network.render_addr_show()),
                        ["-4", "route", "show", "default"] => Ok(network
                            .default_route_devices
                            .iter()
                            .map(|device| format!("default via 192.0.2.1 dev {device}\n"))
                            .collect()),
                        ["addr", verb @ ("add" | "del"), cidr, "dev", interface] => {
                            let (addr, prefix) = cidr.split_once('/').ok_or("no prefix")?;
                            let address = InterfaceAddress {
                                interface: interface.to_string(),
                                addr: addr.parse().map_err(|_| "bad address")?,
                                prefix_len: prefix.parse().map_err(|_| "bad prefix")?,
                            };
                            if *verb == "add" {
                                let arp_ignore =
                                    std::fs::read_to_string(&arp_ignore_path).unwrap_or_default();
                                network.arp_ignore_at_add.push(arp_ignore.trim().to_owned());
                                if network.addresses.contains(&address) {
                                    return Err("RTNETLINK answers: File exists".into());
                                }
                                network.addresses.push(address);
                            } else {
                                let before = network.addresses.len();
                                network.addresses.retain(|known| *known != address);
                                if network.addresses.len() == before {
                                    return Err("RTNETLINK answers: Cannot assign requested \
                                                address"
                                        .into());
                                }
                            }
                            Ok(String::new())
                        }
                        _ => Err(format!("fake ip: unexpected `ip {}`", args.join(" "))),
                    }
                }
            };
            let fake = FakeHost {
                host: Host {
                    proc_sys,
                    proc_net,
                    sysctl_file: root.join("etc/sysctl.d/90-lbd-realserver.conf"),
                    ip: Box::new(fake_ip),
                },
                root,
                network,
            };
            for interface in ["all", "default", "lo", "eth0"] {
                for name in ["arp_ignore", "arp_announce", "rp_filter"] {
                    fake.set(interface, name, 0);
                }
            }
            fake.add_address("lo", "127.0.0.1", 8);
            fake.add_address("eth0", "192.0.2.11", 24);
            fake.network
                .borrow_mut()
                .default_route_devices
                .push("eth0".into());
            fake.listen_tcp("");
            fake
        }

        fn set(&self, interface: &str, name: &str, value: u32) {
            let path = self.host.conf_path(interface, name);
            std::fs::create_dir_all(path.parent().expect("conf dir")).expect("create conf dir");
            std::fs::write(&path, format!("{value}\n")).expect("write sysctl");
        }

        fn get(&self, interface: &str, name: &str) -> u32 {
            read_sysctl(&self.host.conf_path(interface, name)).expect("read sysctl")
        }

        fn add_address(&self, interface: &str, addr: &str, prefix_len: u8) {
            self.network.borrow_mut().addresses.push(InterfaceAddress {
                interface: interface.into(),
                addr: ip(addr),
                prefix_len,
            });
        }

        fn addresses_on(&self, interface: &str) -> Vec<String> {
            self.network
                .borrow()
                .addresses
                .iter()
                .filter(|address| address.interface == interface)
                .map(InterfaceAddress::cidr)
                .collect()
        }

        /// Writes /proc/net/tcp with these LISTEN lines (`HEXADDR:HEXPORT` each).
        fn listen_tcp(&self, locals: &str) {
            let mut text = String::from(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
            );
            for (slot, local) in locals.split_whitespace().enumerate() {
                let _ = writeln!(
                    text,
                    "{slot:4}: {local} 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1 1 0000000000000000 100 0 0 10 0"
                );
            }
            std::fs::write(self.host.proc_net.join("tcp"), text).expect("write tcp");
        }

        fn commands(&self) -> Vec<String> {
            self.network.borrow().commands.clone()
        }

        /// A host `lbd realserver setup` left right: VIP on lo, ARP sysctls set, Redis on *:6379.
        fn prepared() -> FakeHost {
            let fake = FakeHost::new();
            fake.set("all", "arp_ignore", 1);
            fake.set("all", "arp_announce", 2);
            fake.add_address("lo", VIP, 32);
            fake.listen_tcp("00000000:18EB");
            fake
        }
    }

    fn fixes(report: &Report) -> Vec<&str> {
        report
            .problems
            .iter()
            .map(|finding| finding.fix.as_str())
            .collect()
    }

    fn problem_about<'a>(report: &'a Report, needle: &str) -> Option<&'a Finding> {
        report
            .problems
            .iter()
            .find(|finding| finding.problem.contains(needle))
    }

    // ----- check -----

    #[test]
    fn check_passes_a_prepared_host() {
        let fake = FakeHost::prepared();
        let report = check(&fake.host, &[ip(VIP)], Some(6379));
        assert!(!report.has_problems(), "{:#?}", report.problems);
        let ok = report.ok.join("\n");
        assert!(ok.contains("198.18.0.100/32 is on lo"), "{ok}");
        assert!(ok.contains("arp_ignore >= 1"), "{ok}");
        assert!(ok.contains("arp_announce >= 2"), "{ok}");
        assert!(ok.contains("rp_filter not strict"), "{ok}");
        assert!(
            ok.contains("198.18.0.100:6379: a service listens on 0.0.0.0"),
            "{ok}"
        );
    }

    #[test]
    fn check_finds_every_mistake_of_a_fresh_host() {
        let fake = FakeHost::new();
        let report = check(&fake.host, &[ip(VIP)], Some(6379));
        assert_eq!(
            fixes(&report),
            [
                "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.lo.arp_ignore=1, and \
                 persist both in /etc/sysctl.d (`lbd realserver setup` does both)",
                "sysctl -w net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.lo.arp_announce=2, and \
                 persist both in /etc/sysctl.d (`lbd realserver setup` does both)",
                "ip addr add 198.18.0.100/32 dev lo",
                "start the service (e.g. systemctl start redis-server) with `port 6379` and \
                 `bind 0.0.0.0` (or a bind list including 198.18.0.100) in redis.conf",
            ]
        );
        let arp = problem_about(&report, "arp_ignore below 1").expect("arp_ignore finding");
        assert!(
            arp.problem.contains("eth0 (all=0, eth0=0)"),
            "{}",
            arp.problem
        );
    }

    #[test]
    fn arp_sysctls_count_at_their_effective_value() {
        // all=0 but every interface set: effective 1 and 2 everywhere.
        let fake = FakeHost::prepared();
        fake.set("all", "arp_ignore", 0);
        fake.set("all", "arp_announce", 0);
        fake.set("eth0", "arp_ignore", 1);
        fake.set("eth0", "arp_announce", 2);
        assert!(!check(&fake.host, &[ip(VIP)], None).has_problems());

        // A second interface left at 0 is caught, and only it is named.
        fake.set("eth1", "arp_ignore", 0);
        fake.set("eth1", "arp_announce", 2);
        let report = check(&fake.host, &[ip(VIP)], None);
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let problem = &report.problems[0].problem;
        assert!(
            problem.contains("arp_ignore below 1 on eth1 (all=0, eth1=0)"),
            "{problem}"
        );
        assert!(!problem.contains("eth0"), "{problem}");

        // `all` alone covers every interface; lo's own value does not matter for ARP.
        fake.set("all", "arp_ignore", 1);
        fake.set("lo", "arp_ignore", 0);
        assert!(!check(&fake.host, &[ip(VIP)], None).has_problems());
    }

    #[test]
    fn arp_announce_1_is_not_enough() {
        let fake = FakeHost::prepared();
        fake.set("all", "arp_announce", 1);
        let report = check(&fake.host, &[ip(VIP)], None);
        assert!(problem_about(&report, "arp_announce below 2").is_some());
    }

    #[test]
    fn check_finds_the_vip_on_another_interface() {
        let fake = FakeHost::prepared();
        fake.add_address("eth0", VIP, 24);
        let report = check(&fake.host, &[ip(VIP)], None);
        assert_eq!(fixes(&report), ["ip addr del 198.18.0.100/24 dev eth0"]);
        assert!(
            report.problems[0]
                .problem
                .contains("takes the VIP's traffic")
        );
    }

    #[test]
    fn check_finds_a_wide_prefix_on_lo() {
        let fake = FakeHost::prepared();
        fake.network
            .borrow_mut()
            .addresses
            .retain(|a| a.addr != ip(VIP));
        fake.add_address("lo", VIP, 24);
        let report = check(&fake.host, &[ip(VIP)], None);
        assert_eq!(
            fixes(&report),
            ["ip addr del 198.18.0.100/24 dev lo && ip addr add 198.18.0.100/32 dev lo"]
        );
    }

    #[test]
    fn strict_rp_filter_matters_only_off_the_route_to_clients() {
        let fake = FakeHost::prepared();
        fake.add_address("eth1", "10.1.0.11", 24);
        for name in ["arp_ignore", "arp_announce", "rp_filter"] {
            fake.set("eth1", name, 0);
        }
        // Strict on eth0, which carries the default route: fine.
        fake.set("eth0", "rp_filter", 1);
        let report = check(&fake.host, &[ip(VIP)], None);
        assert!(!report.has_problems(), "{:#?}", report.problems);
        assert!(
            report
                .ok
                .iter()
                .any(|ok| ok.starts_with("rp_filter strict on eth0"))
        );

        // Strict through `all`: eth1 (no default route) drops the director's frames.
        fake.set("eth0", "rp_filter", 0);
        fake.set("all", "rp_filter", 1);
        let report = check(&fake.host, &[ip(VIP)], None);
        let finding = problem_about(&report, "rp_filter strict").expect("rp_filter finding");
        assert!(
            finding.problem.contains("eth1 (all=1, eth1=0)"),
            "{}",
            finding.problem
        );
        assert!(!finding.problem.contains("eth0 ("), "{}", finding.problem);
        assert!(
            finding
                .fix
                .starts_with("sysctl -w net.ipv4.conf.all.rp_filter=2")
        );

        // Loose `all` overrides a strict interface (max(2, 1) = 2).
        fake.set("all", "rp_filter", 2);
        fake.set("eth1", "rp_filter", 1);
        assert!(!check(&fake.host, &[ip(VIP)], None).has_problems());
    }

    #[test]
    fn check_finds_redis_bound_to_the_rip_only() {
        let fake = FakeHost::prepared();
        // 127.0.0.1:6379 and 192.0.2.11:6379, the classic `bind 127.0.0.1 192.0.2.11`.
        fake.listen_tcp("0100007F:18EB 0B0200C0:18EB");
        let report = check(&fake.host, &[ip(VIP)], Some(6379));
        let finding = problem_about(&report, "nothing listens on 198.18.0.100:6379")
            .expect("listener finding");
        if cfg!(target_endian = "little") {
            assert!(
                finding.problem.contains("127.0.0.1:6379, 192.0.2.11:6379"),
                "{}",
                finding.problem
            );
        }
        assert!(
            finding.fix.contains("bind ... 198.18.0.100"),
            "{}",
            finding.fix
        );

        if cfg!(target_endian = "little") {
            fake.listen_tcp("640012C6:18EB"); // bound to the VIP itself
            assert!(!check(&fake.host, &[ip(VIP)], Some(6379)).has_problems());
        }
    }

    #[test]
    fn an_empty_port_is_one_finding_for_all_vips() {
        let fake = FakeHost::prepared();
        fake.add_address("lo", VIP6, 128);
        fake.listen_tcp("");
        let report = check(&fake.host, &[ip(VIP), ip(VIP6)], Some(6379));
        assert_eq!(
            fixes(&report),
            [
                "start the service (e.g. systemctl start redis-server) with `port 6379` and \
              `bind 0.0.0.0 ::` (or a bind list including 198.18.0.100 2001:db8::100) in \
              redis.conf"
            ]
        );
    }

    #[test]
    fn ipv6_vips_need_no_arp_sysctls() {
        let fake = FakeHost::new(); // every ARP sysctl at 0
        fake.add_address("lo", VIP6, 128);
        std::fs::write(fake.host.proc_net.join("tcp6"), PROC_NET_TCP6).expect("write tcp6");
        let report = check(&fake.host, &[ip(VIP6)], Some(6379));
        assert!(!report.has_problems(), "{:#?}", report.problems);
        assert!(
            report
                .ok
                .iter()
                .any(|ok| ok == "2001:db8::100/128 is on lo")
        );
        assert!(!report.ok.iter().any(|ok| ok.contains("arp_")));
    }

    #[test]
    fn check_reports_a_missing_proc_as_a_problem() {
        let fake = FakeHost::prepared();
        std::fs::remove_file(fake.host.proc_net.join("tcp")).expect("remove tcp");
        let report = check(&fake.host, &[ip(VIP)], Some(6379));
        let finding = problem_about(&report, "cannot list listening sockets").expect("finding");
        assert!(
            finding.problem.contains("proc/net/tcp"),
            "{}",
            finding.problem
        );
    }

    // ----- setup and teardown -----

    #[test]
    fn setup_sets_sysctls_before_adding_the_vip_and_persists_them() {
        let fake = FakeHost::new();
        let outcome = setup(&fake.host, &[ip(VIP), ip(VIP6)]).expect("setup");
        assert_eq!(
            fake.commands(),
            [
                "-o addr show",
                "addr add 198.18.0.100/32 dev lo",
                "addr add 2001:db8::100/128 dev lo",
            ]
        );
        assert_eq!(fake.network.borrow().arp_ignore_at_add, ["1", "1"]);
        assert_eq!(fake.get("all", "arp_ignore"), 1);
        assert_eq!(fake.get("all", "arp_announce"), 2);
        assert_eq!(fake.get("lo", "arp_ignore"), 1);
        assert_eq!(fake.get("lo", "arp_announce"), 2);
        assert_eq!(
            fake.get("eth0", "arp_ignore"),
            0,
            "interfaces are covered by `all`"
        );

        let file = std::fs::read_to_string(&fake.host.sysctl_file).expect("sysctl file");
        for line in [
            "# lbd-previous: net.ipv4.conf.all.arp_ignore = 0",
            "net.ipv4.conf.all.arp_ignore = 1",
            "net.ipv4.conf.all.arp_announce = 2",
            "net.ipv4.conf.lo.arp_ignore = 1",
            "net.ipv4.conf.lo.arp_announce = 2",
        ] {
            assert!(
                file.lines().any(|l| l == line),
                "missing {line:?} in\n{file}"
            );
        }
        assert_eq!(
            outcome.actions,
            [
                "set net.ipv4.conf.all.arp_ignore = 1 (was 0)",
                "set net.ipv4.conf.all.arp_announce = 2 (was 0)",
                "set net.ipv4.conf.lo.arp_ignore = 1 (was 0)",
                "set net.ipv4.conf.lo.arp_announce = 2 (was 0)",
                &format!("wrote {}", fake.host.sysctl_file.display()),
                "added 198.18.0.100/32 to lo",
                "added 2001:db8::100/128 to lo",
            ]
        );
        assert!(
            outcome
                .notes
                .iter()
                .any(|note| note.contains("does not survive a reboot"))
        );
        assert!(!check(&fake.host, &[ip(VIP), ip(VIP6)], None).has_problems());
    }

    #[test]
    fn setup_is_idempotent_and_keeps_the_first_previous_values() {
        let fake = FakeHost::new();
        setup(&fake.host, &[ip(VIP)]).expect("first setup");
        let file = std::fs::read_to_string(&fake.host.sysctl_file).expect("file");
        let again = setup(&fake.host, &[ip(VIP)]).expect("second setup");
        assert!(again.actions.is_empty(), "{:?}", again.actions);
        assert!(
            again
                .notes
                .contains(&"198.18.0.100/32 already on lo".to_owned())
        );
        assert_eq!(
            std::fs::read_to_string(&fake.host.sysctl_file).expect("file"),
            file
        );
        assert_eq!(fake.addresses_on("lo"), ["127.0.0.1/8", "198.18.0.100/32"]);
    }

    #[test]
    fn setup_never_lowers_a_stricter_value() {
        let fake = FakeHost::new();
        fake.set("all", "arp_ignore", 2);
        setup(&fake.host, &[ip(VIP)]).expect("setup");
        assert_eq!(fake.get("all", "arp_ignore"), 2);
        let file = std::fs::read_to_string(&fake.host.sysctl_file).expect("file");
        assert!(
            file.contains("\nnet.ipv4.conf.all.arp_ignore = 2\n"),
            "{file}"
        );
    }

    #[test]
    fn ipv6_only_setup_touches_no_sysctl() {
        let fake = FakeHost::new();
        setup(&fake.host, &[ip(VIP6)]).expect("setup");
        assert_eq!(fake.get("all", "arp_ignore"), 0);
        assert!(!fake.host.sysctl_file.exists());
        assert_eq!(
            fake.addresses_on("lo"),
            ["127.0.0.1/8", "2001:db8::100/128"]
        );
    }

    #[test]
    fn setup_replaces_a_wide_prefix_on_lo() {
        let fake = FakeHost::new();
        fake.add_address("lo", VIP, 24);
        let outcome = setup(&fake.host, &[ip(VIP)]).expect("setup");
        assert_eq!(fake.addresses_on("lo"), ["127.0.0.1/8", "198.18.0.100/32"]);
        assert!(
            outcome
                .actions
                .iter()
                .any(|a| a.starts_with("removed 198.18.0.100/24"))
        );
    }

    #[test]
    fn setup_refuses_a_vip_held_by_another_interface_and_changes_nothing() {
        let fake = FakeHost::new();
        fake.add_address("eth0", VIP, 24);
        let err = setup(&fake.host, &[ip(VIP)]).expect_err("must refuse");
        assert!(
            err.contains("ip addr del 198.18.0.100/24 dev eth0"),
            "{err}"
        );
        assert_eq!(fake.commands(), ["-o addr show"]);
        assert_eq!(fake.get("all", "arp_ignore"), 0);
        assert!(!fake.host.sysctl_file.exists());
    }

    #[test]
    fn setup_error_names_the_failure_and_what_was_done() {
        let fake = FakeHost::new();
        // Listing works, changing addresses is refused, as for a non-root user with a
        // writable (fake) /proc/sys.
        let host = Host {
            ip: Box::new(|args: &[&str]| match args {
                ["-o", "addr", "show"] => Ok(String::new()),
                _ => Err(format!(
                    "`ip {}` failed: RTNETLINK answers: Operation not permitted (run as root)",
                    args.join(" ")
                )),
            }),
            proc_sys: fake.host.proc_sys.clone(),
            proc_net: fake.host.proc_net.clone(),
            sysctl_file: fake.host.sysctl_file.clone(),
        };
        let err = setup(&host, &[ip(VIP)]).expect_err("ip fails");
        assert!(
            err.starts_with("`ip addr add 198.18.0.100/32 dev lo` failed"),
            "{err}"
        );
        assert!(err.contains("(run as root)"), "{err}");
        assert!(
            err.contains("already done: set net.ipv4.conf.all.arp_ignore = 1"),
            "{err}"
        );
    }

    #[test]
    fn teardown_removes_the_vip_then_restores_what_setup_changed() {
        let fake = FakeHost::new();
        fake.set("lo", "arp_ignore", 1); // already right before setup: stays 1
        setup(&fake.host, &[ip(VIP)]).expect("setup");
        fake.network.borrow_mut().commands.clear();

        let outcome = teardown(&fake.host, &[ip(VIP)]).expect("teardown");
        assert_eq!(
            fake.commands(),
            [
                "-o addr show",
                "addr del 198.18.0.100/32 dev lo",
                "-o addr show"
            ]
        );
        assert_eq!(fake.addresses_on("lo"), ["127.0.0.1/8"]);
        assert_eq!(fake.get("all", "arp_ignore"), 0);
        assert_eq!(fake.get("all", "arp_announce"), 0);
        assert_eq!(fake.get("lo", "arp_ignore"), 1);
        assert_eq!(fake.get("lo", "arp_announce"), 0);
        assert!(!fake.host.sysctl_file.exists());
        assert_eq!(
            outcome.actions,
            [
                "removed 198.18.0.100/32 from lo",
                "restored net.ipv4.conf.all.arp_ignore = 0 (was 1)",
                "restored net.ipv4.conf.all.arp_announce = 0 (was 2)",
                "restored net.ipv4.conf.lo.arp_announce = 0 (was 2)",
                &format!("removed {}", fake.host.sysctl_file.display()),
            ]
        );
        // A second teardown has nothing left to do.
        let again = teardown(&fake.host, &[ip(VIP)]).expect("second teardown");
        assert!(again.actions.is_empty(), "{:?}", again.actions);
    }

    #[test]
    fn teardown_keeps_sysctls_another_vip_still_needs() {
        let fake = FakeHost::new();
        setup(&fake.host, &[ip(VIP), ip("198.18.0.101")]).expect("setup");
        let outcome = teardown(&fake.host, &[ip(VIP)]).expect("teardown");
        assert_eq!(fake.get("all", "arp_ignore"), 1);
        assert!(fake.host.sysctl_file.exists());
        assert!(
            outcome
                .notes
                .iter()
                .any(|n| n.contains("lo still holds 198.18.0.101/32")),
            "{:?}",
            outcome.notes
        );
    }

    #[test]
    fn teardown_leaves_a_value_changed_since_setup() {
        let fake = FakeHost::new();
        setup(&fake.host, &[ip(VIP)]).expect("setup");
        fake.set("all", "arp_ignore", 2);
        let outcome = teardown(&fake.host, &[ip(VIP)]).expect("teardown");
        assert_eq!(fake.get("all", "arp_ignore"), 2);
        assert_eq!(fake.get("all", "arp_announce"), 0);
        assert!(outcome.notes.contains(
            &"left net.ipv4.conf.all.arp_ignore = 2: changed since lbd set it to 1".to_owned()
        ));
    }

    #[test]
    fn teardown_without_lbds_file_leaves_sysctls_alone() {
        let fake = FakeHost::prepared(); // set by hand, not by lbd
        let outcome = teardown(&fake.host, &[ip(VIP)]).expect("teardown");
        assert_eq!(outcome.actions, ["removed 198.18.0.100/32 from lo"]);
        assert_eq!(fake.get("all", "arp_ignore"), 1);
        assert!(
            outcome
                .notes
                .iter()
                .any(|n| n.contains("lbd did not set them"))
        );
    }

    /// Found by review: a wide VIP prefix on lo goes even when the host-prefix one is
    /// there too.
    #[test]
    fn setup_removes_a_wide_vip_on_lo_even_when_the_host_prefix_is_there_too() {
        let fake = FakeHost::new();
        fake.add_address("lo", VIP, 32);
        fake.add_address("lo", VIP, 24);
        setup(&fake.host, &[ip(VIP)]).expect("setup");
        assert_eq!(
            fake.addresses_on("lo"),
            ["127.0.0.1/8", "198.18.0.100/32"],
            "setup left the wide prefix"
        );
        let report = check(&fake.host, &[ip(VIP)], None);
        assert!(
            problem_about(&report, "prefix wider").is_none(),
            "check after setup: {:?}",
            report.problems
        );
    }
}
