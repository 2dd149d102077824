//! The health of every checked backend, and what it makes of the desired state.
//!
//! The board is pure state: checkers' results come in through [`Board::record`], a reload
//! through [`Board::sync`] (which says which checkers to start and stop), and
//! [`Board::effective`] turns the config's desired state into the one to apply: down or
//! unfit backends removed (or drained), and at most one master per write VIP.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::SystemTime,
};

use lb_common::VipKey;

use super::{replication::unfit, tracker::Tracker};
use crate::{
    config::{CheckConfig, Config, OnDown, Role, SentinelConfig, VipConfig},
    daemon::Resolved,
    reconcile::DesiredVip,
};

/// What a Sentinel watcher needs; a reload that changes it restarts the watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelSpec {
    pub sentinel: SentinelConfig,
    pub timeout: std::time::Duration,
    pub interval: std::time::Duration,
}

impl SentinelSpec {
    pub fn of(vip: &VipConfig) -> Option<SentinelSpec> {
        let check = vip.check.as_ref()?;
        Some(SentinelSpec {
            sentinel: vip.sentinel.clone()?,
            timeout: check.timeout,
            interval: check.interval,
        })
    }
}

/// One checked backend: a VIP's key and the backend's address.
pub type BackendKey = (VipKey, IpAddr);

/// What a checker needs to know besides the backend's address; a reload that changes it
/// restarts the checker (and the backend's state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub check: CheckConfig,
    pub role: Role,
    pub vip: IpAddr,
    pub port: u16,
}

impl CheckSpec {
    pub fn of(vip: &VipConfig) -> Option<CheckSpec> {
        Some(CheckSpec {
            check: vip.check.clone()?,
            role: vip.role,
            vip: vip.address,
            port: vip.port,
        })
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// What was seen: `PONG`, `LOADING Redis is loading ...`, `timed out after 1s`, ...
    pub reason: String,
    /// From `INFO replication`, when the VIP's role needs it.
    pub replication: Option<super::Replication>,
    /// A script's dynamic weight (exit code - 2).
    pub weight: Option<u32>,
    /// From `INFO clients stats memory`, for load-aware weights and memory drain.
    pub load: Option<super::load::Load>,
}

impl Outcome {
    pub fn up(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            reason: reason.into(),
            replication: None,
            weight: None,
            load: None,
        }
    }

    pub fn down(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            reason: reason.into(),
            replication: None,
            weight: None,
            load: None,
        }
    }
}

/// One backend's health.
#[derive(Clone, Debug)]
pub struct BackendHealth {
    pub spec: CheckSpec,
    pub tracker: Tracker,
    /// The latest check's result.
    pub last: Option<Outcome>,
    /// The latest successful check's result: its role and weight stand while a backend is
    /// up, so a failed check short of `fall` changes nothing (a failure carries neither).
    pub last_ok: Option<Outcome>,
    /// Percent of its weight load leaves it (load-aware weights; 100 otherwise).
    pub load_factor: u32,
    /// Over its share of `maxmemory`: no new flows until it is back below.
    pub memory_full: bool,
    /// Which checker's reports count (a reload that changes the check starts a new one; a
    /// report the old one had already sent is ignored).
    pub checker: u64,
    pub checked_at: Option<SystemTime>,
    /// When the up/down state last changed (or checking began).
    pub since: SystemTime,
}

impl BackendHealth {
    /// Why this backend takes no new flows of its VIP, or `None` when it may.
    pub fn unfit(&self, max_lag: Option<std::time::Duration>) -> Option<String> {
        if !self.tracker.is_up() {
            return Some(match &self.last {
                None => "not checked yet".to_owned(),
                Some(last) if last.ok => format!("rising: {}", last.reason),
                Some(last) => last.reason.clone(),
            });
        }
        let replication = self.last_ok.as_ref().and_then(|l| l.replication.as_ref());
        if self.last_ok.is_none() && self.spec.role != Role::Any {
            return Some("role not checked yet".to_owned());
        }
        unfit(self.spec.role, replication, max_lag)
    }

    /// The weight the last successful check asked for (a script's dynamic weight).
    pub fn weight(&self) -> Option<u32> {
        self.last_ok.as_ref().and_then(|l| l.weight)
    }

    /// What a decision depends on: a change in it re-plans the maps.
    fn decision_inputs(
        &self,
        max_lag: Option<std::time::Duration>,
    ) -> (bool, bool, Option<u32>, u32, bool) {
        let fit = self.unfit(max_lag).is_none();
        (
            self.tracker.is_up(),
            fit,
            self.weight(),
            self.load_factor,
            self.memory_full,
        )
    }

    /// The weight to apply for a fit backend: the script's or the configured one, scaled
    /// by load; 0 while its memory is over its share.
    pub fn effective_weight(&self, configured: u32) -> u32 {
        if self.memory_full {
            return 0;
        }
        let weight = self.weight().unwrap_or(configured);
        if self.spec.check.load_weights.is_some() {
            weight * self.load_factor
        } else {
            weight
        }
    }
}

/// Checkers to start (new or changed backends) and stop (removed ones), after a reload;
/// likewise Sentinel watchers, per write VIP.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Each with the checker id its reports must carry.
    pub start: Vec<(BackendKey, CheckSpec, u64)>,
    pub stop: Vec<BackendKey>,
    /// Each with the watcher id its reports must carry.
    pub start_sentinels: Vec<(VipKey, SentinelSpec, u64)>,
    pub stop_sentinels: Vec<VipKey>,
}

/// What one recorded result changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The backend went up or down.
    pub went: Option<bool>,
    /// Something a decision depends on changed: re-plan.
    pub replan: bool,
}

/// Something worth a log line, found while deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    MasterChosen {
        vip: String,
        master: IpAddr,
    },
    NoMaster {
        vip: String,
    },
    /// More than one backend reports `role:master`.
    SeveralMasters {
        vip: String,
        masters: Vec<IpAddr>,
        kept: Option<IpAddr>,
    },
    /// Sentinel names a master that cannot take the VIP's flows.
    SentinelMasterUnusable {
        vip: String,
        master: SocketAddr,
        why: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |addrs: &[IpAddr]| {
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Event::MasterChosen { vip, master } => write!(f, "{vip}: master is {master}"),
            Event::NoMaster { vip } => write!(
                f,
                "{vip}: no backend is a healthy master; new flows are dropped"
            ),
            Event::SeveralMasters {
                vip,
                masters,
                kept: Some(kept),
            } => write!(
                f,
                "{vip}: {} report role:master; keeping {kept}, the master already in service",
                list(masters)
            ),
            Event::SeveralMasters {
                vip,
                masters,
                kept: None,
            } => write!(
                f,
                "{vip}: {} all report role:master and none was in service: sending to none until one is demoted",
                list(masters)
            ),
            Event::SentinelMasterUnusable { vip, master, why } => write!(
                f,
                "{vip}: Sentinel says the master is {master}, which {why}: sending to none"
            ),
        }
    }
}

impl Event {
    /// Whether the event is an error an operator must act on.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Event::SeveralMasters { kept: None, .. } | Event::SentinelMasterUnusable { .. }
        )
    }
}

/// The health of every checked backend.
#[derive(Clone, Debug, Default)]
pub struct Board {
    backends: BTreeMap<BackendKey, BackendHealth>,
    /// The master each write VIP sends to.
    masters: BTreeMap<VipKey, IpAddr>,
    /// The masters each write VIP last saw when more than one reported it.
    several: BTreeMap<VipKey, Vec<IpAddr>>,
    /// Sentinel watchers (spec, id), and what each last said (`None`: no Sentinel answered).
    sentinels: BTreeMap<VipKey, (SentinelSpec, u64, Option<SocketAddr>)>,
    /// The Sentinel master each write VIP last found unusable (logged once).
    unusable: BTreeMap<VipKey, SocketAddr>,
    /// Id of the next checker started.
    next_checker: u64,
    /// VIPs whose sorry server the last [`Board::effective`] put in service.
    sorry_in_use: BTreeSet<VipKey>,
}

impl Board {
    /// Follows a (re)loaded config: backends whose check did not change keep their state;
    /// new or changed ones start in their initial state; removed ones are forgotten.
    pub fn sync(&mut self, config: &Config, now: SystemTime) -> Changes {
        let mut changes = Changes::default();
        let mut wanted = BTreeMap::new();
        for vip in &config.vips {
            let Some(spec) = CheckSpec::of(vip) else {
                continue;
            };
            for b in &vip.backends {
                wanted.insert((vip.key(), b.address), spec.clone());
            }
        }
        let known: Vec<BackendKey> = self.backends.keys().copied().collect();
        for key in known {
            match wanted.get(&key) {
                Some(spec) if *spec == self.backends[&key].spec => {}
                _ => {
                    self.backends.remove(&key);
                    changes.stop.push(key);
                }
            }
        }
        for (key, spec) in wanted {
            if self.backends.contains_key(&key) {
                continue;
            }
            self.backends.insert(
                key,
                BackendHealth {
                    tracker: Tracker::new(spec.check.initially_up),
                    spec: spec.clone(),
                    last: None,
                    last_ok: None,
                    load_factor: 100,
                    memory_full: false,
                    checker: self.next_checker,
                    checked_at: None,
                    since: now,
                },
            );
            changes.start.push((key, spec, self.next_checker));
            self.next_checker += 1;
        }
        let wanted: BTreeMap<VipKey, SentinelSpec> = config
            .vips
            .iter()
            .filter_map(|v| Some((v.key(), SentinelSpec::of(v)?)))
            .collect();
        let known: Vec<VipKey> = self.sentinels.keys().copied().collect();
        for key in known {
            if wanted.get(&key) != Some(&self.sentinels[&key].0) {
                self.sentinels.remove(&key);
                changes.stop_sentinels.push(key);
            }
        }
        for (key, spec) in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.sentinels.entry(key) {
                slot.insert((spec.clone(), self.next_checker, None));
                changes.start_sentinels.push((key, spec, self.next_checker));
                self.next_checker += 1;
            }
        }
        let vips: BTreeSet<VipKey> = config.vips.iter().map(|v| v.key()).collect();
        self.masters.retain(|k, _| vips.contains(k));
        self.several.retain(|k, _| vips.contains(k));
        self.unusable.retain(|k, _| vips.contains(k));
        changes
    }

    /// Records what Sentinel says of a write VIP's master; returns whether it changed. A
    /// report from a watcher a reload replaced is ignored.
    pub fn record_sentinel(
        &mut self,
        vip: VipKey,
        watcher: u64,
        master: Option<SocketAddr>,
    ) -> bool {
        match self.sentinels.get_mut(&vip) {
            Some((_, id, said)) if *id == watcher && *said != master => {
                *said = master;
                true
            }
            _ => false,
        }
    }

    /// Whether the VIP's sorry server is in service (no backend takes new flows).
    pub fn sorry_in_use(&self, vip: &VipKey) -> bool {
        self.sorry_in_use.contains(vip)
    }

    /// The id the VIP's Sentinel watcher reports with.
    pub fn sentinel_watcher(&self, vip: &VipKey) -> Option<u64> {
        self.sentinels.get(vip).map(|(_, id, _)| *id)
    }

    /// What Sentinel last said of a write VIP's master.
    pub fn sentinel_master(&self, vip: &VipKey) -> Option<SocketAddr> {
        self.sentinels.get(vip).and_then(|(_, _, said)| *said)
    }

    /// Counts one check result (ignored for a backend no longer checked).
    pub fn record(
        &mut self,
        key: BackendKey,
        checker: u64,
        outcome: Outcome,
        max_lag: Option<std::time::Duration>,
        now: SystemTime,
    ) -> Recorded {
        let Some(health) = self.backends.get_mut(&key) else {
            return Recorded::default();
        };
        if health.checker != checker {
            return Recorded::default();
        }
        let before = health.decision_inputs(max_lag);
        let changed =
            health
                .tracker
                .record(outcome.ok, health.spec.check.rise, health.spec.check.fall);
        if let (true, Some(load), Some(permille)) = (
            outcome.ok,
            outcome.load,
            health.spec.check.max_memory_permille,
        ) {
            health.memory_full = super::load::memory_full(&load, permille, health.memory_full);
        }
        if outcome.ok {
            health.last_ok = Some(outcome.clone());
        }
        health.last = Some(outcome);
        health.checked_at = Some(now);
        if changed {
            health.since = now;
        }
        let went = changed.then(|| health.tracker.is_up());
        let mut replan = health.decision_inputs(max_lag) != before;
        if let Some(metric) = health.spec.check.load_weights {
            replan |= self.update_load_factors(key.0, metric);
        }
        Recorded { went, replan }
    }

    /// Recomputes the load factors of a load-aware VIP's up backends; returns whether one
    /// changed.
    fn update_load_factors(&mut self, vip: VipKey, metric: crate::config::LoadMetric) -> bool {
        use crate::config::LoadMetric;
        let range =
            (vip, IpAddr::V4(Ipv4Addr::UNSPECIFIED))..=(vip, IpAddr::V6(Ipv6Addr::from(u128::MAX)));
        let mut loads = Vec::new();
        let mut applied = BTreeMap::new();
        for ((_, addr), h) in self.backends.range(range.clone()) {
            let Some(load) = h.last_ok.as_ref().and_then(|l| l.load) else {
                continue;
            };
            if !h.tracker.is_up() {
                continue;
            }
            let value = match metric {
                LoadMetric::ConnectedClients => load.connected_clients,
                LoadMetric::OpsPerSec => load.ops_per_sec,
            };
            loads.push((*addr, value));
            applied.insert(*addr, h.load_factor);
        }
        let factors = super::load::factors(&loads, &applied);
        let mut changed = false;
        for ((_, addr), h) in self.backends.range_mut(range) {
            let factor = factors.get(addr).copied().unwrap_or(100);
            if h.load_factor != factor {
                h.load_factor = factor;
                changed = true;
            }
        }
        changed
    }

    pub fn get(&self, key: &BackendKey) -> Option<&BackendHealth> {
        self.backends.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BackendKey, &BackendHealth)> {
        self.backends.iter()
    }

    /// The master a write VIP sends to, if any.
    /// Takes `addr` as the write VIP's master in service, as an adopted datapath has it: it
    /// stays the one while it reports master, as if this board had chosen it.
    pub fn presume_master(&mut self, vip: VipKey, addr: IpAddr) {
        self.masters.insert(vip, addr);
    }

    pub fn master(&self, vip: &VipKey) -> Option<IpAddr> {
        self.masters.get(vip).copied()
    }

    /// The state to apply: `resolved` (the config's desired state, VIP for VIP) less the
    /// backends that are down or unfit for their VIP's role. Keeps at most one master per
    /// write VIP: the one in service while it still reports master; a newcomer only when
    /// it is the only one.
    pub fn effective(
        &mut self,
        config: &Config,
        resolved: &Resolved,
    ) -> (Vec<DesiredVip>, Vec<Event>) {
        let mut events = Vec::new();
        let mut out = Vec::with_capacity(resolved.vips.len());
        for (vip, desired) in config.vips.iter().zip(&resolved.vips) {
            debug_assert_eq!(vip.key(), desired.key);
            if vip.check.is_none() {
                out.push(desired.clone());
                continue;
            }
            let key = desired.key;
            let name = format!(
                "{}/{}",
                std::net::SocketAddr::new(vip.address, vip.port),
                vip.protocol
            );
            let mut fit: Vec<IpAddr> = desired
                .backends
                .iter()
                .filter(|b| {
                    self.backends
                        .get(&(key, b.addr))
                        .is_some_and(|h| h.unfit(vip.max_lag).is_none())
                })
                .map(|b| b.addr)
                .collect();
            let sentinel = self.sentinel_master(&key);
            if let (Role::Master, Some(said)) = (vip.role, sentinel.as_ref()) {
                // Sentinel's answer wins over role polling: its master, if it is one of this
                // VIP's backends and answers its check; else none.
                let master = said.ip();
                let why = if said.port() != vip.port
                    || !desired.backends.iter().any(|b| b.addr == master)
                {
                    Some("is not a backend of this VIP")
                } else if !self
                    .backends
                    .get(&(key, master))
                    .is_some_and(|h| h.tracker.is_up())
                {
                    Some("fails its check")
                } else {
                    None
                };
                let chosen = match why {
                    Some(why) => {
                        if self.unusable.get(&key) != Some(said) {
                            events.push(Event::SentinelMasterUnusable {
                                vip: name.clone(),
                                master: *said,
                                why: why.to_owned(),
                            });
                            self.unusable.insert(key, *said);
                        }
                        None
                    }
                    None => {
                        self.unusable.remove(&key);
                        Some(master)
                    }
                };
                let previous = self.masters.get(&key).copied();
                match chosen {
                    Some(master) if previous != Some(master) => {
                        events.push(Event::MasterChosen {
                            vip: format!("{name} (Sentinel)"),
                            master,
                        });
                        self.masters.insert(key, master);
                    }
                    Some(_) => {}
                    None => {
                        self.masters.remove(&key);
                    }
                }
                self.several.remove(&key);
                fit = chosen.into_iter().collect();
            } else if vip.role == Role::Master {
                self.unusable.remove(&key);
                let current = self.masters.get(&key).copied().filter(|m| fit.contains(m));
                // A newcomer only when it is the only claimant among backends that have all
                // answered at least once: at start, the first to answer is not the master
                // just because the others have not been asked yet.
                let all_checked = desired.backends.iter().all(|b| {
                    self.backends
                        .get(&(key, b.addr))
                        .is_some_and(|h| h.tracker.checked())
                });
                let chosen = current.or_else(|| (fit.len() == 1 && all_checked).then(|| fit[0]));
                if fit.len() > 1 {
                    if self.several.get(&key) != Some(&fit) {
                        events.push(Event::SeveralMasters {
                            vip: name.clone(),
                            masters: fit.clone(),
                            kept: current,
                        });
                        self.several.insert(key, fit.clone());
                    }
                } else {
                    self.several.remove(&key);
                }
                let previous = self.masters.get(&key).copied();
                match chosen {
                    Some(master) => {
                        if previous != Some(master) {
                            events.push(Event::MasterChosen {
                                vip: name.clone(),
                                master,
                            });
                        }
                        self.masters.insert(key, master);
                    }
                    // A master not checked since it was presumed (an adopted datapath's) or
                    // its check changed stays the one to keep until its check answers.
                    None if previous.is_some_and(|m| {
                        self.backends
                            .get(&(key, m))
                            .is_some_and(|h| !h.tracker.checked())
                    }) => {}
                    None => {
                        if previous.is_some() && fit.len() <= 1 {
                            events.push(Event::NoMaster { vip: name.clone() });
                        }
                        self.masters.remove(&key);
                    }
                }
                fit = chosen.into_iter().collect();
            }
            let backends = desired
                .backends
                .iter()
                .filter_map(|b| {
                    if fit.contains(&b.addr) {
                        let weight = self
                            .backends
                            .get(&(key, b.addr))
                            .map_or(b.weight, |h| h.effective_weight(b.weight));
                        Some(crate::reconcile::DesiredBackend {
                            weight,
                            ..b.clone()
                        })
                    } else {
                        match vip.on_down {
                            OnDown::Remove => None,
                            OnDown::Drain => Some(crate::reconcile::DesiredBackend {
                                weight: 0,
                                ..b.clone()
                            }),
                        }
                    }
                })
                .collect::<Vec<_>>();
            // The sorry server stands in only while no backend takes new flows.
            let backends = match resolved.sorry.get(&key) {
                Some(sorry) if backends.iter().all(|b| b.weight == 0) => {
                    self.sorry_in_use.insert(key);
                    let mut backends = backends;
                    backends.push(sorry.clone());
                    backends
                }
                _ => {
                    self.sorry_in_use.remove(&key);
                    backends
                }
            };
            out.push(DesiredVip {
                key,
                group: desired.group,
                selection: desired.selection,
                timeouts: desired.timeouts,
                backends,
            });
        }
        (out, events)
    }
}

#[cfg(test)]
mod tests;
