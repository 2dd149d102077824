//! Load-aware weights and memory-aware drain, from the redis check's `INFO`. Pure.
//!
//! Redis connections are long-lived: hashing new connections evenly leaves a backend that
//! restarted (or joined) with far fewer clients than the others for a long time. Load-aware
//! weights scale each backend's weight down by how loaded it is next to the least loaded
//! one, in steps of 10%, never below 10%, and change a backend's factor only when the new
//! one differs by 30 points or more, so tables are not rebuilt on noise.

use std::{collections::BTreeMap, net::IpAddr};

/// What `INFO clients stats memory` says of a backend's load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub connected_clients: u64,
    pub ops_per_sec: u64,
    pub used_memory: u64,
    /// 0: no limit.
    pub maxmemory: u64,
}

impl Load {
    /// Reads the fields from `INFO` text; `None` without `connected_clients`.
    pub fn parse(info: &str) -> Option<Load> {
        let field = |name: &str| {
            info.lines().find_map(|line| {
                let (key, value) = line.trim_end_matches('\r').split_once(':')?;
                (key == name).then(|| value.trim().parse::<u64>().ok())?
            })
        };
        Some(Load {
            connected_clients: field("connected_clients")?,
            ops_per_sec: field("instantaneous_ops_per_sec").unwrap_or(0),
            used_memory: field("used_memory").unwrap_or(0),
            maxmemory: field("maxmemory").unwrap_or(0),
        })
    }
}

/// The lowest factor (percent of the configured weight) load can bring a backend to.
pub const FLOOR: u32 = 10;
/// Factors move in steps of this many points...
const STEP: u32 = 10;
/// ...and only when the new one is this far from the applied one.
const HYSTERESIS: u32 = 30;

/// Each backend's factor (percent of its weight) from its load, given the factors applied
/// now. The least loaded backend gets 100; one with n times its load gets about 100/n (both
/// loads cushioned by a quarter of the mean, at least 10, so small numbers do not swing).
pub fn factors(loads: &[(IpAddr, u64)], applied: &BTreeMap<IpAddr, u32>) -> BTreeMap<IpAddr, u32> {
    let Some(min) = loads.iter().map(|&(_, l)| l).min() else {
        return BTreeMap::new();
    };
    let mean = loads.iter().map(|&(_, l)| l as f64).sum::<f64>() / loads.len() as f64;
    let cushion = (mean / 4.0).max(10.0);
    loads
        .iter()
        .map(|&(addr, load)| {
            let raw = (min as f64 + cushion) / (load as f64 + cushion) * 100.0;
            let target = ((raw / STEP as f64).round() as u32 * STEP).clamp(FLOOR, 100);
            let now = applied.get(&addr).copied().unwrap_or(100);
            let factor = if target.abs_diff(now) >= HYSTERESIS {
                target
            } else {
                now
            };
            (addr, factor)
        })
        .collect()
}

/// Whether a backend is too full for new flows: above `permille` of `maxmemory` to start
/// draining, back below it by 5 points (or half the share, for shares under 10%) to stop.
/// No `maxmemory`: never.
pub fn memory_full(load: &Load, permille: u32, was_full: bool) -> bool {
    if load.maxmemory == 0 {
        return false;
    }
    let used = (load.used_memory as u128 * 1000 / load.maxmemory as u128) as u32;
    if was_full {
        used >= permille - 50.min(permille / 2)
    } else {
        used > permille
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 11));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 12));
    const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 13));

    #[test]
    fn reads_info_sections() {
        let info = "# Clients\r\nconnected_clients:42\r\n# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:4194304\r\n# Stats\r\ninstantaneous_ops_per_sec:1200\r\n";
        assert_eq!(
            Load::parse(info),
            Some(Load {
                connected_clients: 42,
                ops_per_sec: 1200,
                used_memory: 1 << 20,
                maxmemory: 4 << 20
            })
        );
        assert_eq!(Load::parse("# Memory\r\nused_memory:1\r\n"), None);
    }

    #[test]
    fn a_restarted_backend_takes_most_new_connections_until_loads_even_out() {
        let none = BTreeMap::new();
        let f = factors(&[(A, 1000), (B, 1000), (C, 0)], &none);
        assert_eq!(f[&C], 100);
        assert_eq!(f[&A], 10, "{f:?}");
        // Even loads: everyone at 100, and nothing moves on small differences.
        let even = factors(&[(A, 1000), (B, 1010), (C, 990)], &f);
        assert_eq!(even.values().copied().collect::<Vec<_>>(), [100, 100, 100]);
    }

    #[test]
    fn factors_move_only_past_the_hysteresis() {
        let applied: BTreeMap<_, _> = [(A, 100), (B, 100)].into();
        // B carries about 20% more: its target (90) is within 30 points of 100.
        assert_eq!(factors(&[(A, 100), (B, 120)], &applied)[&B], 100);
        // Twice the load: 60 with the cushion, far enough to move.
        assert_eq!(factors(&[(A, 100), (B, 200)], &applied)[&B], 60);
    }

    #[test]
    fn small_numbers_do_not_swing_the_weights() {
        // 1 client against 3: the cushion keeps this from being a 3x difference.
        let f = factors(&[(A, 1), (B, 3)], &BTreeMap::new());
        assert_eq!(f[&B], 100, "{f:?}");
    }

    #[test]
    fn memory_drain_starts_above_the_share_and_stops_5_points_below() {
        let load = |used| Load {
            used_memory: used,
            maxmemory: 1000,
            ..Load::default()
        };
        assert!(!memory_full(&load(900), 900, false));
        assert!(memory_full(&load(901), 900, false));
        assert!(
            memory_full(&load(860), 900, true),
            "still within the hysteresis"
        );
        assert!(!memory_full(&load(849), 900, true));
        assert!(
            !memory_full(&Load::default(), 900, true),
            "no maxmemory: never"
        );
    }
}

#[cfg(test)]
mod small_share_tests {
    use super::*;

    /// the drain stops "5 points below" the share via `permille.saturating_sub(50)`.
    /// For `max_memory_share` of 0.05 or less (accepted: "above 0, at most 1") that is 0, and
    /// `used >= 0` always holds: once drained, the backend is drained for good, whatever
    /// its memory does.
    #[test]
    fn a_small_share_stops_draining_once_memory_is_freed() {
        let load = |used| Load {
            used_memory: used,
            maxmemory: 1000,
            ..Load::default()
        };
        // max_memory_share = 0.05 -> 50 permille.
        assert!(memory_full(&load(60), 50, false), "6% used: drained");
        assert!(
            !memory_full(&load(1), 50, true),
            "0.1% used of a 5% share, yet still drained (and would be at 0 bytes too)"
        );
    }
}
