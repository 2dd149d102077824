//! After taking over an earlier run's datapath: the health board starts knowing nothing
//! (every checked backend "not checked yet"), yet the adopted maps hold the backends that
//! were in service a moment ago, with connections tracked to them. Applying the board as it
//! is would take them all out and move those connections. So until each checked backend's
//! first check has answered (or a deadline passes), a checked VIP keeps the backends the
//! adopted maps hold, with their configured weights (drained ones stay drained); the rest
//! of a new configuration applies at once.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_common::VipKey;

use crate::{
    config::{Config, Role},
    daemon::Resolved,
    health::Board,
    reconcile::DesiredVip,
};

pub struct Hold {
    /// Backends of each adopted VIP, `(address, weight in the maps)`.
    adopted: BTreeMap<VipKey, Vec<(IpAddr, u32)>>,
    /// When health applies whatever the checks have said.
    until: Instant,
}

impl Hold {
    /// Starts holding for `config`'s checked VIPs, and tells `board` which backend serves
    /// each write VIP (`role = "master"`): the one the maps have in service, when it is one.
    pub fn new(
        config: &Config,
        adopted: BTreeMap<VipKey, Vec<(IpAddr, u32)>>,
        board: &mut Board,
        now: Instant,
    ) -> Hold {
        let mut longest = Duration::ZERO;
        for vip in &config.vips {
            let Some(check) = &vip.check else { continue };
            longest = longest.max(check.interval + check.timeout);
            let serving: Vec<IpAddr> = adopted
                .get(&vip.key())
                .into_iter()
                .flatten()
                .filter(|(_, weight)| *weight > 0)
                .map(|(addr, _)| *addr)
                .collect();
            if let (Role::Master, [master]) = (vip.role, serving.as_slice()) {
                board.presume_master(vip.key(), *master);
            }
        }
        Hold {
            adopted,
            // A first check starts at once and ends within its timeout; one interval more
            // covers a retry.
            until: now + longest + Duration::from_secs(1),
        }
    }

    /// Replaces each checked VIP's backends in `desired` with those the adopted maps hold
    /// (and the configuration still has), at their configured weights, 0 where the maps
    /// had 0.
    pub fn keep(&self, config: &Config, resolved: &Resolved, desired: &mut [DesiredVip]) {
        for out in desired.iter_mut() {
            let Some(held) = self.adopted.get(&out.key) else {
                continue;
            };
            let Some(index) = config.vips.iter().position(|v| v.key() == out.key) else {
                continue;
            };
            if config.vips[index].check.is_none() {
                continue;
            }
            let configured = resolved.vips[index]
                .backends
                .iter()
                .chain(resolved.sorry.get(&out.key));
            out.backends = configured
                .filter_map(|b| {
                    let (_, weight) = held.iter().find(|(addr, _)| *addr == b.addr)?;
                    let mut b = b.clone();
                    if *weight == 0 {
                        b.weight = 0;
                    }
                    Some(b)
                })
                .collect();
        }
    }

    /// Whether health may take over: every held backend's check has answered once, or the
    /// deadline passed.
    pub fn done(&self, config: &Config, board: &Board, now: Instant) -> bool {
        if now >= self.until {
            return true;
        }
        config.vips.iter().filter(|v| v.check.is_some()).all(|vip| {
            vip.backends.iter().all(|b| {
                board
                    .get(&(vip.key(), b.address))
                    .is_none_or(|h| h.tracker.checked())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, daemon::resolve_with};

    fn config(text: &str) -> Config {
        Config::parse(std::path::Path::new("hold.toml"), text).expect("valid config")
    }

    const CHECKED: &str = r#"
[director]
interfaces = ["eth0"]
[[vip]]
address = "198.18.0.100"
port = 6379
[vip.check]
type = "tcp"
interval = 1
[[vip.backend]]
address = "198.18.0.11"
mac = "02:00:00:00:00:0b"
weight = 2
[[vip.backend]]
address = "198.18.0.12"
mac = "02:00:00:00:00:0c"
[[vip.backend]]
address = "198.18.0.13"
mac = "02:00:00:00:00:0d"
"#;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, last])
    }

    /// Checked backends start "not checked yet"; the adopted maps had .11 (weight 1 then,
    /// 2 now) and .12 drained. Held: .11 at its new weight, .12 at 0, .13 (never in the
    /// maps) left out until its check.
    #[test]
    fn checked_vips_keep_the_adopted_backends_at_their_configured_weights() {
        let config = config(CHECKED);
        let resolved = resolve_with(&config, &BTreeMap::new()).unwrap();
        let mut board = Board::default();
        board.sync(&config, std::time::SystemTime::now());
        let (mut desired, _) = board.effective(&config, &resolved);
        assert!(desired[0].backends.is_empty(), "unchecked backends are out");
        let key = config.vips[0].key();
        let adopted = BTreeMap::from([(key, vec![(addr(11), 1), (addr(12), 0)])]);
        let hold = Hold::new(&config, adopted, &mut board, Instant::now());
        hold.keep(&config, &resolved, &mut desired);
        let kept: Vec<(IpAddr, u32)> = desired[0]
            .backends
            .iter()
            .map(|b| (b.addr, b.weight))
            .collect();
        assert_eq!(kept, [(addr(11), 2), (addr(12), 0)]);
    }

    #[test]
    fn the_hold_ends_when_every_backend_was_checked_or_at_the_deadline() {
        let config = config(CHECKED);
        let mut board = Board::default();
        board.sync(&config, std::time::SystemTime::now());
        let start = Instant::now();
        let hold = Hold::new(&config, BTreeMap::new(), &mut board, start);
        assert!(!hold.done(&config, &board, start));
        assert!(hold.done(&config, &board, start + Duration::from_secs(60)));
        let key = config.vips[0].key();
        for last in [11, 12, 13] {
            let checker = board.get(&(key, addr(last))).unwrap().checker;
            board.record(
                (key, addr(last)),
                checker,
                crate::health::Outcome::down("refused"),
                None,
                std::time::SystemTime::now(),
            );
        }
        assert!(hold.done(&config, &board, start));
    }

    /// The write VIP's master the adopted maps serve (.11) is presumed: it survives the
    /// first plans while unchecked, and when .11 and .12 both report role:master after the
    /// restart, .11 is kept, as if this board had chosen it.
    #[test]
    fn the_presumed_master_survives_the_first_effective_and_is_kept() {
        let config = config(
            &CHECKED
                .replacen("port = 6379\n", "port = 6379\nrole = \"master\"\n", 1)
                .replacen("type = \"tcp\"", "type = \"redis\"", 1),
        );
        let resolved = resolve_with(&config, &BTreeMap::new()).unwrap();
        let key = config.vips[0].key();
        let mut board = Board::default();
        board.sync(&config, std::time::SystemTime::now());
        // The adopted maps serve .11 only (the write VIP's master).
        let adopted = BTreeMap::from([(key, vec![(addr(11), 2)])]);
        let hold = Hold::new(&config, adopted, &mut board, Instant::now());
        assert_eq!(board.master(&key), Some(addr(11)), "presumed");
        // What `start` does next, before any check answered.
        let (mut desired, _) = board.effective(&config, &resolved);
        hold.keep(&config, &resolved, &mut desired);
        assert_eq!(
            board.master(&key),
            Some(addr(11)),
            "the first effective() forgot the presumed master"
        );
        // First checks: .11 and .12 both claim master, .13 is a replica.
        let master = crate::health::Outcome {
            replication: Some(crate::health::Replication::Master),
            ..crate::health::Outcome::up("PONG")
        };
        let replica = crate::health::Outcome {
            replication: Some(crate::health::Replication::Replica {
                link_up: true,
                syncing: false,
                last_io_secs: Some(1),
            }),
            ..crate::health::Outcome::up("PONG")
        };
        for (last, outcome) in [(11, &master), (12, &master), (13, &replica)] {
            let checker = board.get(&(key, addr(last))).unwrap().checker;
            board.record(
                (key, addr(last)),
                checker,
                outcome.clone(),
                None,
                std::time::SystemTime::now(),
            );
        }
        assert!(hold.done(&config, &board, Instant::now()));
        let (desired, _) = board.effective(&config, &resolved);
        let serving: Vec<IpAddr> = desired[0].backends.iter().map(|b| b.addr).collect();
        assert_eq!(serving, [addr(11)], "the master in service was not kept");
    }
}
