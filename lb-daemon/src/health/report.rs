//! The health state file (`/run/lbd/<instance>.health`): written by the daemon, read by
//! `lbd status`. One backend a line, tab-separated, so a shell can read it too:
//! `vip  backend  state  role  checked_unix_ms  since_unix_ms  reason`.

use std::{
    io,
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lb_common::VipKey;

use super::board::{Board, Outcome};
use crate::config::{Config, Role};

/// One backend's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthLine {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub backend: IpAddr,
    /// `up` (taking new flows), `standby` (healthy, wrong role or not the chosen master),
    /// `down`, `pending` (not checked yet), or `sorry` (the VIP's sorry server).
    pub state: String,
    /// The replication role last seen, or `-`.
    pub role: String,
    pub checked: Option<SystemTime>,
    pub since: SystemTime,
    pub reason: String,
}

/// Text a server or script chose, made safe for one tab-separated line on a terminal:
/// control characters (tabs, newlines, escapes) become spaces.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn from_millis(text: &str) -> Option<SystemTime> {
    let ms: u64 = text.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The lines for every checked backend, in config order.
pub fn lines(config: &Config, board: &Board) -> Vec<HealthLine> {
    let mut out = Vec::new();
    for vip in &config.vips {
        let key: VipKey = vip.key();
        for b in &vip.backends {
            let Some(health) = board.get(&(key, b.address)) else {
                continue;
            };
            let unfit = health.unfit(vip.max_lag);
            let master = board.master(&key);
            let (state, reason) = if !health.tracker.is_up() {
                let why = unfit.unwrap_or_default();
                (
                    if health.tracker.checked() {
                        "down"
                    } else {
                        "pending"
                    },
                    why,
                )
            } else if vip.role == Role::Master && master != Some(b.address) {
                let why = match (master, board.sentinel_master(&key)) {
                    (Some(m), _) => format!("{m} is the master in service"),
                    (None, Some(said)) => format!("Sentinel names {said}"),
                    (None, None) => "several report master, none in service".to_owned(),
                };
                ("standby", unfit.unwrap_or(why))
            } else if health.memory_full {
                (
                    "drained",
                    match health.last_ok.as_ref().and_then(|l| l.load) {
                        Some(load) => format!(
                            "used_memory {} of maxmemory {}: over max_memory_share",
                            load.used_memory, load.maxmemory
                        ),
                        None => "over max_memory_share".to_owned(),
                    },
                )
            } else if vip.role == Role::Master && board.sentinel_master(&key).is_some() {
                // In service because Sentinel names it, whatever its own report says.
                let own = match &unfit {
                    Some(why) => format!("; its own report: {why}"),
                    None => String::new(),
                };
                ("up", format!("Sentinel's master{own}"))
            } else if let Some(why) = unfit {
                ("standby", why)
            } else {
                (
                    "up",
                    health
                        .last
                        .as_ref()
                        .map_or("initially up".to_owned(), |l| l.reason.clone()),
                )
            };
            let reason = match (health.spec.check.load_weights, &health.last_ok) {
                (
                    Some(_),
                    Some(Outcome {
                        load: Some(load), ..
                    }),
                ) if state == "up" => format!(
                    "{reason}; {} clients, {} ops/s: load factor {}%",
                    load.connected_clients, load.ops_per_sec, health.load_factor
                ),
                _ => reason,
            };
            let role = health
                .last_ok
                .as_ref()
                .and_then(|l| l.replication.as_ref())
                .map_or("-".to_owned(), |r| {
                    printable(&r.describe()).replace(' ', "_")
                });
            out.push(HealthLine {
                vip: vip.address,
                port: vip.port,
                protocol: vip.protocol.to_string(),
                backend: b.address,
                state: state.to_owned(),
                role,
                checked: health.checked_at,
                since: health.since,
                reason: printable(&reason),
            });
        }
        if let Some(sorry) = &vip.sorry_server
            && vip.check.is_some()
        {
            let standing_in = board.sorry_in_use(&key);
            out.push(HealthLine {
                vip: vip.address,
                port: vip.port,
                protocol: vip.protocol.to_string(),
                backend: sorry.address,
                state: "sorry".to_owned(),
                role: "-".to_owned(),
                checked: None,
                since: SystemTime::now(),
                reason: if standing_in {
                    "sorry server: standing in, no backend takes new flows".to_owned()
                } else {
                    "sorry server: idle while a backend takes new flows".to_owned()
                },
            });
        }
    }
    out
}

/// Writes the file whole (through a rename, so a reader never sees half of it).
pub fn write(path: &Path, lines: &[HealthLine]) -> io::Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&format!(
            "{}/{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            std::net::SocketAddr::new(l.vip, l.port),
            l.protocol,
            l.backend,
            l.state,
            l.role,
            l.checked.map_or("-".to_owned(), |t| millis(t).to_string()),
            millis(l.since),
            l.reason
        ));
    }
    let tmp = path.with_extension("health.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads the file; lines that do not parse are skipped.
pub fn read(path: &Path) -> io::Result<Vec<HealthLine>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().filter_map(parse).collect())
}

fn parse(line: &str) -> Option<HealthLine> {
    let mut f = line.splitn(7, '\t');
    let service = f.next()?;
    let (addr_port, protocol) = service.split_once('/')?;
    let service: std::net::SocketAddr = addr_port.parse().ok()?;
    Some(HealthLine {
        vip: service.ip(),
        port: service.port(),
        protocol: protocol.to_owned(),
        backend: f.next()?.parse().ok()?,
        state: f.next()?.to_owned(),
        role: f.next()?.to_owned(),
        checked: from_millis(f.next()?),
        since: from_millis(f.next()?)?,
        reason: f.next().unwrap_or("").to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_the_file() {
        let line = HealthLine {
            vip: IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 100)),
            port: 6379,
            protocol: "TCP".into(),
            backend: IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 11)),
            state: "down".into(),
            role: "-".into(),
            checked: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            since: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
            reason: "AUTH: WRONGPASS invalid username-password pair".into(),
        };
        let pending = HealthLine {
            checked: None,
            state: "pending".into(),
            reason: String::new(),
            ..line.clone()
        };
        let dir = std::env::temp_dir().join(format!("lbd-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.health");
        write(&path, &[line.clone(), pending.clone()]).unwrap();
        assert_eq!(read(&path).unwrap(), [line, pending]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
