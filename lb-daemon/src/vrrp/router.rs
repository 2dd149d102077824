//! One VRRP instance at work: its [`Machine`] fed by its socket and its timers, and what
//! its transitions do, in the order that never resets a client's connection:
//!
//! - becoming master: forwarding on (asked of the daemon, which owns the maps), then the
//!   VIPs on the interface, then gratuitous ARP. While the VIP is on the interface but the
//!   datapath does not forward it, the kernel would answer the clients' segments with RST.
//! - leaving: the VIPs off first, then forwarding off; a segment that still arrives is
//!   dropped by the kernel (not its address), not reset.
//!
//! The advert loop never waits for those steps: they run in a task of their own.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::{
    addresses::Addresses,
    machine::{Action, Event, Machine, Settings, State},
    packet::{Advert, Expect, MULTICAST, Rejected, password},
    report::VrrpLine,
    socket::{AdvertSocket, ArpSocket, gratuitous_arp},
};
use crate::config::VrrpConfig;

/// What an instance asks of the daemon's loop (the one owner of map writes).
#[derive(Debug)]
pub enum Request {
    /// Forward (or pass) the VIPs of `group`; answered once the map says so.
    Forward {
        group: u32,
        on: bool,
        done: oneshot::Sender<bool>,
    },
}

/// Where an instance runs, resolved at start.
#[derive(Clone, Debug)]
pub struct Placement {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// Source of adverts and tie-breaker: `unicast_src` or the interface's address.
    pub source: Ipv4Addr,
}

/// Shared with the status writer.
pub type Status = Arc<Mutex<VrrpLine>>;

/// What the transition task is told.
enum Step {
    Master,
    /// A tracked interface is down: like a backup, but says FAULT.
    Fault,
    /// Still master after a split brain: gratuitous ARP again.
    Reassert,
    Backup,
    /// Shutting down: the VIPs off; forwarding is left to the daemon's detach.
    Stop,
}

pub struct Router {
    pub config: VrrpConfig,
    pub group: u32,
    pub placement: Placement,
    pub socket: AdvertSocket,
    pub addresses: Addresses,
    pub arp: ArpSocket,
    pub requests: mpsc::UnboundedSender<Request>,
    pub status: Status,
    /// Signals the status writer that something changed.
    pub changed: Arc<tokio::sync::Notify>,
    /// Other instances' router ids on the same interface: their adverts are not ours to count.
    pub siblings: Vec<u8>,
    /// True while a VIP of this instance has no backend in service (see `track_pool_weight`).
    pub pool_empty: watch::Receiver<bool>,
    /// The sync group this instance is in, if any.
    pub group_link: Option<GroupLink>,
}

/// One member's link to its sync group: what it says, and what the others say.
pub struct GroupLink {
    pub name: String,
    /// This instance's index in the config.
    pub me: usize,
    /// Every instance's name, by index.
    pub names: Vec<String>,
    pub tx: tokio::sync::broadcast::Sender<(usize, State)>,
    pub rx: tokio::sync::broadcast::Receiver<(usize, State)>,
}

/// Completes with the next state another member of the group went to; never without a
/// group.
async fn group_news(link: &mut Option<GroupLink>) -> (usize, State) {
    let Some(link) = link else {
        return std::future::pending().await;
    };
    loop {
        match link.rx.recv().await {
            Ok((from, state)) if from != link.me => return (from, state),
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await;
            }
        }
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Initialize => "init",
        State::Backup => "backup",
        State::Master => "master",
        State::Fault => "fault",
    }
}

fn reject_name(r: Rejected) -> &'static str {
    match r {
        Rejected::Ttl => "ttl",
        Rejected::Truncated => "truncated",
        Rejected::Version => "version",
        Rejected::Checksum => "checksum",
        Rejected::Vrid => "vrid",
        Rejected::Interval => "interval",
        Rejected::Auth => "auth",
        Rejected::AddressCount => "addresses",
    }
}

impl Router {
    /// Runs until `stop` turns true; then hands over (priority 0) and removes the VIPs.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let Router {
            config,
            group,
            placement,
            socket,
            addresses,
            arp,
            requests,
            status,
            changed,
            siblings,
            mut pool_empty,
            mut group_link,
        } = self;
        let auth = config.auth_pass.as_deref().map(password);
        let expect = Expect {
            version: config.version,
            vrid: config.virtual_router_id,
            interval_cs: config.advert_int_cs,
            password: auth,
        };
        let mut machine = Machine::new(Settings {
            priority: config.priority,
            interval_cs: config.advert_int_cs,
            preempt: config.preempt,
            preempt_delay_cs: (config.preempt_delay.as_millis() / 10) as u32,
            address: placement.source,
        });
        let (steps, step_rx) = mpsc::unbounded_channel();
        let transitions = tokio::spawn(transitions(
            Effects {
                config: config.clone(),
                group,
                placement: placement.clone(),
                addresses,
                arp,
                requests,
                status: status.clone(),
            },
            step_rx,
        ));
        let epoch = Instant::now();
        let now = || epoch.elapsed().as_micros() as u64;
        let destinations: Vec<Ipv4Addr> = if config.unicast_peers.is_empty() {
            vec![MULTICAST]
        } else {
            config.unicast_peers.clone()
        };
        let send = |priority: u8, status: &Status| {
            let advert = Advert {
                version: config.version,
                vrid: config.virtual_router_id,
                priority,
                interval_cs: config.advert_int_cs,
                addresses: config.vips.clone(),
                password: auth,
            };
            for dst in &destinations {
                match socket.send(&advert.encode(placement.source, *dst), *dst) {
                    Ok(()) => status.lock().expect("status").sent += 1,
                    Err(err) => {
                        warn!(instance = %config.name, to = %dst, cause = %err, "sending an advert failed")
                    }
                }
            }
        };
        let mut reason = "started".to_owned();
        // The instance's own interface and its track_interface list (keepalived's FAULT).
        let tracked: Vec<String> = std::iter::once(config.interface.clone())
            .chain(config.track_interfaces.iter().cloned())
            .collect();
        let mut link_fault = false;
        let mut links = tokio::time::interval(LINK_POLL);
        links.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The master said it is leaving: the takeover that follows is a hand-over.
        let mut handed_over = false;
        let mut actions = machine.handle(Event::Startup, now());
        let mut stopping = false;
        // Stopped while master: forward on until the new master is heard (see below).
        let mut hand_over = false;
        loop {
            let before = status.lock().expect("status").state.clone();
            for action in actions.drain(..) {
                match action {
                    Action::SendAdvert { priority } => send(priority, &status),
                    Action::TakeOver => {
                        let _ = steps.send(Step::Master);
                    }
                    // Into fault: the state change below sends that step.
                    Action::StandDown if machine.state() == State::Fault => {}
                    Action::StandDown => {
                        let _ = steps.send(if stopping { Step::Stop } else { Step::Backup });
                    }
                    Action::Reassert => {
                        info!(instance = %config.name, "another master heard and outranked: announcing the VIPs again");
                        let _ = steps.send(Step::Reassert);
                    }
                }
            }
            let state = if stopping {
                "stopped"
            } else {
                state_name(machine.state())
            };
            if state != before {
                // Into backup at start: no VIPs may linger from an earlier run.
                if before == "init" && state == "backup" {
                    let _ = steps.send(Step::Backup);
                }
                if state == "fault" {
                    let _ = steps.send(Step::Fault);
                }
                let mut s = status.lock().expect("status");
                s.state = state.to_owned();
                s.since = SystemTime::now();
                s.reason = reason.clone();
                // The sync group follows a takeover and a stand-down (not the start, where
                // every member comes up as a backup). This member's own faults and
                // recoveries are announced where its links are watched; a fault the group
                // caused is not news to the group.
                let follow = matches!(
                    (before.as_str(), state),
                    (_, "master") | ("master", "backup")
                );
                if let (Some(link), true) = (&group_link, follow) {
                    let _ = link.tx.send((link.me, machine.state()));
                }
                match state {
                    "master" => s.master = Some(placement.source),
                    // Deaf or gone: who is master is not known here.
                    "fault" | "stopped" => s.master = None,
                    _ => {}
                }
                s.priority = machine.priority();
                drop(s);
                info!(instance = %config.name, state, %reason, "VRRP state");
                changed.notify_one();
            }
            if stopping {
                break;
            }
            let deadline = machine
                .next_deadline()
                .map(|us| tokio::time::Instant::from_std(epoch + Duration::from_micros(us)));
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    stopping = true;
                    reason = "lbd stopping".to_owned();
                    hand_over = machine.state() == State::Master;
                    actions = machine.handle(Event::Shutdown, now());
                    if !actions.contains(&Action::StandDown) {
                        let _ = steps.send(Step::Stop);
                    }
                }
                Ok(()) = pool_empty.changed(), if config.track_pool_weight.is_some() => {
                    let empty = *pool_empty.borrow_and_update();
                    let weight = config.track_pool_weight.unwrap_or(0);
                    // The address owner keeps 255; nobody drops below 1.
                    let priority = if empty && config.priority != 255 {
                        config.priority.saturating_sub(weight).max(1)
                    } else {
                        config.priority
                    };
                    if priority != machine.priority() {
                        machine.set_priority(priority);
                        let why = if empty { "a VIP's pool has no backend in service" } else { "every pool has a backend again" };
                        info!(instance = %config.name, priority, reason = why, "VRRP priority");
                        status.lock().expect("status").priority = priority;
                        changed.notify_one();
                        // Say so at once: a backup with preempt takes over at its next
                        // master-down check instead of after our next advert.
                        if machine.state() == State::Master {
                            send(priority, &status);
                        }
                    }
                }
                (from, member_state) = group_news(&mut group_link) => {
                    if let Some(link) = &group_link {
                        reason = format!(
                            "sync group {}: {} went {}",
                            link.name,
                            link.names[from],
                            state_name(member_state)
                        );
                    }
                    actions = machine.handle(
                        Event::Group {
                            member: from,
                            state: member_state,
                        },
                        now(),
                    );
                }
                _ = links.tick() => {
                    let down: Vec<&String> = tracked.iter().filter(|i| !link_up(i)).collect();
                    if down.is_empty() == link_fault {
                        link_fault = !down.is_empty();
                        reason = if link_fault {
                            format!("interface {} is down", down[0])
                        } else {
                            "tracked interfaces are up again".to_owned()
                        };
                        actions = machine.handle(Event::Fault(link_fault), now());
                        // The group hears of this member's own fault and of its end (even
                        // while the group keeps it in FAULT for another member's sake).
                        if let Some(link) = &group_link {
                            let news = if link_fault { State::Fault } else { State::Backup };
                            let _ = link.tx.send((link.me, news));
                        }
                    }
                }
                _ = until(deadline) => {
                    let was = machine.state();
                    actions = machine.handle(Event::Tick, now());
                    if was == State::Backup && machine.state() == State::Master && !handed_over {
                        reason = format!(
                            "no advert from the master for {:.2} s",
                            machine.master_down_us() as f64 / 1e6
                        );
                    }
                }
                received = socket.recv() => {
                    let Ok(received) = received else {
                        continue;
                    };
                    if received.src == placement.source {
                        continue;
                    }
                    if !config.unicast_peers.is_empty() && !config.unicast_peers.contains(&received.src) {
                        count_reject(&status, "peer");
                        continue;
                    }
                    match Advert::decode(&received.message, received.ttl, received.src, received.dst, &expect) {
                        Ok(advert) => {
                            status.lock().expect("status").received += 1;
                            let was = machine.state();
                            actions = machine.handle(
                                Event::Advert {
                                    priority: advert.priority,
                                    interval_cs: advert.interval_cs,
                                    from: received.src,
                                },
                                now(),
                            );
                            if advert.priority != 0 && machine.state() == State::Backup {
                                let mut s = status.lock().expect("status");
                                if s.master != Some(received.src) {
                                    s.master = Some(received.src);
                                    changed.notify_one();
                                }
                            }
                            if was == State::Master && machine.state() == State::Backup {
                                reason = format!(
                                    "advert of priority {} from {}",
                                    advert.priority, received.src
                                );
                            }
                            handed_over = advert.priority == 0;
                            if handed_over {
                                reason = format!("the master {} left (priority 0)", received.src);
                            }
                        }
                        Err(Rejected::Vrid)
                            if received.message.get(1).is_some_and(|v| siblings.contains(v)) => {}
                        Err(rejected) => count_reject(&status, reject_name(rejected)),
                    }
                }
            }
        }
        drop(steps);
        let _ = transitions.await;
        if hand_over {
            // The VIPs are off, but the clients still send to this director until the new
            // master's gratuitous ARP reaches them. The datapath forwards them meanwhile (the
            // daemon detaches only after this returns): wait for the new master's first
            // advert (a backup takes over within 3 intervals and its skew), then a moment
            // for its ARPs.
            let interval = Duration::from_millis(u64::from(config.advert_int_cs) * 10);
            let heard = tokio::time::timeout((4 * interval).min(HAND_OVER_WAIT), async {
                loop {
                    let Ok(received) = socket.recv().await else {
                        return false;
                    };
                    let stranger = !config.unicast_peers.is_empty()
                        && !config.unicast_peers.contains(&received.src);
                    if received.src == placement.source || stranger {
                        continue;
                    }
                    if let Ok(advert) = Advert::decode(
                        &received.message,
                        received.ttl,
                        received.src,
                        received.dst,
                        &expect,
                    ) && advert.priority != 0
                    {
                        return true;
                    }
                }
            })
            .await
            .unwrap_or(false);
            if heard {
                tokio::time::sleep(ARP_GRACE).await;
            }
            info!(instance = %config.name, new_master_heard = heard, "handed over");
        }
    }
}

/// Between attempts at a takeover step that failed (the forwarding switch, a VIP).
const RETRY: Duration = Duration::from_secs(1);

/// The longest a stopping master forwards while waiting for the new master's advert.
const HAND_OVER_WAIT: Duration = Duration::from_millis(2500);
/// After the new master's first advert, for its gratuitous ARPs to reach the clients.
const ARP_GRACE: Duration = Duration::from_millis(50);

/// How often tracked interfaces are looked at.
const LINK_POLL: Duration = Duration::from_millis(100);

/// Whether `interface` is up with a carrier (`IFF_UP` and `IFF_RUNNING`); a missing
/// interface is down.
fn link_up(interface: &str) -> bool {
    crate::netdev::link_up(interface).unwrap_or(false)
}

fn count_reject(status: &Status, reason: &str) {
    *status
        .lock()
        .expect("status")
        .rejected
        .entry(reason.to_owned())
        .or_default() += 1;
}

/// Completes at `due`, or never.
async fn until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Folds a step queued behind `current`: the latest decides, a stop always wins, and a
/// reassert adds nothing to another step.
fn fold(current: Step, next: Step) -> Step {
    match (current, next) {
        (Step::Stop, _) | (_, Step::Stop) => Step::Stop,
        (current, Step::Reassert) => current,
        (_, next) => next,
    }
}

/// The steps queued now, folded; `None` when none is, or only a reassert.
fn queued(steps: &mut mpsc::UnboundedReceiver<Step>) -> Option<Step> {
    let mut folded: Option<Step> = None;
    while let Ok(next) = steps.try_recv() {
        folded = Some(match folded {
            Some(current) => fold(current, next),
            None => next,
        });
    }
    folded.filter(|s| !matches!(s, Step::Reassert))
}

/// Carries out transitions in order, and refreshes gratuitous ARP while master. Only the
/// latest state counts: a takeover that a stand-down already follows (a backup that was
/// master for a moment) stops before its VIPs and gratuitous ARPs, which would otherwise
/// reach the clients after the real master's and leave them with a director that no longer
/// holds the VIP.
/// What carrying out transitions takes: the instance, its forwarding group and the way to
/// switch it, its interface, addresses and ARP socket, and its status (for the priority).
struct Effects {
    config: VrrpConfig,
    group: u32,
    placement: Placement,
    addresses: Addresses,
    arp: ArpSocket,
    requests: mpsc::UnboundedSender<Request>,
    status: Status,
}

async fn transitions(effects: Effects, mut steps: mpsc::UnboundedReceiver<Step>) {
    let Effects {
        config,
        group,
        placement,
        addresses,
        arp,
        requests,
        status,
    } = effects;
    // The priority notify commands get: the effective one (track_pool_weight may lower it).
    let priority = || status.lock().expect("status").priority;
    let forward = |on: bool| {
        let requests = requests.clone();
        async move {
            let (done, answer) = oneshot::channel();
            if requests.send(Request::Forward { group, on, done }).is_err() {
                return false;
            }
            answer.await.unwrap_or(false)
        }
    };
    let garp = |repeat: u32| {
        for _ in 0..repeat {
            for vip in &config.vips {
                if let Err(err) = arp.send(&gratuitous_arp(placement.mac, *vip)) {
                    warn!(instance = %config.name, %vip, cause = %err, "gratuitous ARP failed");
                }
            }
        }
    };
    let interval = Duration::from_millis(u64::from(config.advert_int_cs) * 10);
    let mut master = false;
    let mut refresh = config.garp_master_refresh.map(|period| {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    // After a reassert, the gratuitous ARPs again one interval later: a director that was
    // master for a moment may have sent its own after ours.
    let mut regarp: Option<tokio::time::Instant> = None;
    let mut pending: Option<Step> = None;
    loop {
        let step = match pending.take() {
            Some(step) => step,
            None => {
                let step = tokio::select! {
                    step = steps.recv() => step,
                    _ = until(regarp) => {
                        regarp = None;
                        if master {
                            garp(config.garp_master_repeat);
                        }
                        continue;
                    }
                    _ = async {
                        match refresh.as_mut() {
                            Some(interval) if master => { interval.tick().await; }
                            _ => std::future::pending::<()>().await,
                        }
                    } => {
                        garp(1);
                        continue;
                    }
                };
                let Some(step) = step else { break };
                match queued(&mut steps) {
                    Some(next) => fold(step, next),
                    None => step,
                }
            }
        };
        match step {
            Step::Master => {
                if !forward(true).await {
                    error!(instance = %config.name, "the datapath did not switch forwarding on: the VIPs stay off this director; retrying in a second");
                    // Retried unless a later step supersedes it meanwhile.
                    tokio::time::sleep(RETRY).await;
                    pending = Some(queued(&mut steps).unwrap_or(Step::Master));
                    continue;
                }
                if let Some(next) = queued(&mut steps) {
                    pending = Some(next);
                    continue;
                }
                let mut added = true;
                for vip in &config.vips {
                    if let Err(err) = addresses.add(placement.ifindex, *vip).await {
                        error!(instance = %config.name, %vip, cause = %err, "adding the VIP failed; retrying in a second");
                        added = false;
                    }
                }
                master = true;
                if !added {
                    tokio::time::sleep(RETRY).await;
                    pending = Some(queued(&mut steps).unwrap_or(Step::Master));
                    continue;
                }
                if let Some(next) = queued(&mut steps) {
                    pending = Some(next);
                    continue;
                }
                garp(config.garp_master_repeat);
                if let Some(interval) = refresh.as_mut() {
                    interval.reset();
                }
                notify(&config, "MASTER", config.notify.master.as_ref(), priority());
            }
            Step::Reassert => {
                if master {
                    garp(config.garp_master_repeat);
                    regarp = Some(tokio::time::Instant::now() + interval);
                }
            }
            Step::Fault => {
                for vip in &config.vips {
                    if let Err(err) = addresses.remove(placement.ifindex, *vip).await {
                        error!(instance = %config.name, %vip, cause = %err, "removing the VIP failed");
                    }
                }
                master = false;
                if !forward(false).await {
                    error!(instance = %config.name, "the datapath did not switch forwarding off");
                }
                notify(&config, "FAULT", config.notify.fault.as_ref(), priority());
            }
            Step::Backup | Step::Stop => {
                for vip in &config.vips {
                    if let Err(err) = addresses.remove(placement.ifindex, *vip).await {
                        error!(instance = %config.name, %vip, cause = %err, "removing the VIP failed");
                    }
                }
                let was_master = std::mem::take(&mut master);
                if matches!(step, Step::Stop) {
                    break;
                }
                if !forward(false).await {
                    error!(instance = %config.name, "the datapath did not switch forwarding off");
                }
                if was_master {
                    info!(instance = %config.name, "VIPs removed, forwarding off");
                }
                notify(&config, "BACKUP", config.notify.backup.as_ref(), priority());
            }
        }
    }
}

/// keepalived's notify: the state's own command as is, and `notify` with
/// `INSTANCE <name> <STATE> <priority>` appended.
fn notify(config: &VrrpConfig, state: &str, own: Option<&Vec<String>>, priority: u8) {
    let env = || {
        vec![
            ("LBD_VRRP_INSTANCE", config.name.clone()),
            ("LBD_VRRP_STATE", state.to_owned()),
        ]
    };
    if let Some(argv) = own {
        crate::health::notify::spawn(argv.clone(), Vec::new(), env());
    }
    if let Some(argv) = &config.notify.any {
        crate::health::notify::spawn(
            argv.clone(),
            vec![
                "INSTANCE".to_owned(),
                config.name.clone(),
                state.to_owned(),
                priority.to_string(),
            ],
            env(),
        );
    }
}
