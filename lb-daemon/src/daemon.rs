//! `lbd run`: load, write the maps, attach, then follow SIGHUP reloads until shutdown.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::{Settings, VipKey};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, error, info, warn};

use crate::{
    apply::Applier,
    config::{Config, VipConfig, XdpModeSetting, format_mac},
    dataplane::{
        DatapathLogLevel, Dataplane, LoadOptions, adopt, clock, contents, object,
        pins::{self, Pinned},
    },
    error::{Error, Result},
    health::{self, Board, Monitor, Report, SentinelReport, monitor::Reports},
    hold::Hold,
    instance,
    netdev::{self, InterfaceInfo},
    paths::{self, PinLayout},
    reconcile::{DesiredBackend, DesiredVip, FlowTimeouts, Selection},
    vrrp::{self, Vrrp},
};

/// How `lbd run` was asked to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Overrides the config's `director.xdp_mode`.
    pub xdp_mode: Option<XdpModeSetting>,
    pub datapath_log_level: DatapathLogLevel,
}

/// How often the health state file is refreshed (when checks came in) and a failed
/// health-driven apply is retried.
const HEALTH_TICK: Duration = Duration::from_secs(1);

/// The least time between two health-driven applies (see [`Daemon::request_apply`]).
const APPLY_GAP: Duration = Duration::from_millis(50);

/// A channel that may not exist (no VRRP, no sync).
trait Inbox {
    type Item;
    async fn next(&mut self) -> Option<Self::Item>;
}

impl<T> Inbox for tokio::sync::mpsc::UnboundedReceiver<T> {
    type Item = T;
    async fn next(&mut self) -> Option<T> {
        self.recv().await
    }
}

impl<T> Inbox for tokio::sync::mpsc::Receiver<T> {
    type Item = T;
    async fn next(&mut self) -> Option<T> {
        self.recv().await
    }
}

/// The next message of an input that may not exist; never, when it does not.
async fn next_request<I: Inbox>(input: &mut Option<I>) -> Option<I::Item> {
    match input {
        Some(input) => input.next().await,
        None => std::future::pending().await,
    }
}

/// Inputs to the daemon's loop besides health: VRRP's requests and flows from peers.
struct Inputs {
    vrrp: Option<tokio::sync::mpsc::UnboundedReceiver<vrrp::Request>>,
    synced: Option<tokio::sync::mpsc::Receiver<Vec<lb_common::FlowEvent>>>,
}

/// Completes at `due`, or never.
async fn until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// How long MAC resolution waits for ARP replies.
const ARP_WAIT: Duration = Duration::from_secs(3);

/// Turns a validated config into the state the maps should hold, resolving backend MACs
/// through the neighbour table when the config does not fix them.
pub fn desired_state(config: &Config) -> Result<Vec<DesiredVip>> {
    Ok(resolve(config)?.vips)
}

/// [`desired_state`] with the neighbour table given (a configured MAC wins).
pub fn desired_state_with(
    config: &Config,
    neighbours: &BTreeMap<IpAddr, [u8; 6]>,
) -> Result<Vec<DesiredVip>> {
    Ok(resolve_with(config, neighbours)?.vips)
}

/// What a config asks the maps to hold before health is considered, MACs resolved: the
/// VIPs with every backend, and each VIP's sorry server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub vips: Vec<DesiredVip>,
    pub sorry: BTreeMap<VipKey, DesiredBackend>,
}

/// Resolves every backend's (and sorry server's) MAC: configured, else by ARP. A backend
/// whose address is this director's own is local (keepalived's "localnode").
pub fn resolve(config: &Config) -> Result<Resolved> {
    let local: BTreeSet<IpAddr> = netdev::ip_addresses()?
        .into_iter()
        .map(|(_, addr)| addr)
        .filter(|addr| !addr.is_loopback())
        .collect();
    let unresolved: Vec<IpAddr> = config
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().chain(&v.sorry_server))
        .filter(|b| b.mac.is_none() && !local.contains(&b.address))
        .map(|b| b.address)
        .collect();
    let neighbours = if unresolved.is_empty() {
        BTreeMap::new()
    } else {
        netdev::resolve(&unresolved, &config.interfaces, ARP_WAIT)?
    };
    resolve_with_local(config, &neighbours, &local)
}

/// [`resolve`] with the neighbour table given (a configured MAC wins).
pub fn resolve_with(config: &Config, neighbours: &BTreeMap<IpAddr, [u8; 6]>) -> Result<Resolved> {
    resolve_with_local(config, neighbours, &BTreeSet::new())
}

/// [`resolve_with`], with this director's own addresses: a backend at one of them is local.
pub fn resolve_with_local(
    config: &Config,
    neighbours: &BTreeMap<IpAddr, [u8; 6]>,
    local: &BTreeSet<IpAddr>,
) -> Result<Resolved> {
    let desired = |b: &crate::config::BackendConfig, key: String| {
        if local.contains(&b.address) {
            // Never sent anywhere: the datapath passes its flows to this host's stack.
            return Ok(DesiredBackend {
                addr: b.address,
                weight: b.weight,
                mac: [0; 6],
                local: true,
            });
        }
        let Some(mac) = b.mac.or_else(|| neighbours.get(&b.address).copied()) else {
            return Err(Error::Unresolved {
                addr: b.address,
                key,
                interfaces: config.interfaces.join(", "),
            });
        };
        Ok(DesiredBackend {
            addr: b.address,
            weight: b.weight,
            mac,
            local: false,
        })
    };
    let mut resolved = Resolved::default();
    for (i, vip) in config.vips.iter().enumerate() {
        let backends = vip
            .backends
            .iter()
            .enumerate()
            .map(|(j, b)| desired(b, format!("vip[{i}].backend[{j}]")))
            .collect::<Result<Vec<_>>>()?;
        if backends.iter().all(|b| b.weight == 0) {
            warn!(vip = %vip.address, port = vip.port, "every backend has weight 0: new flows to this VIP are dropped");
        }
        if let Some(sorry) = &vip.sorry_server {
            resolved
                .sorry
                .insert(vip.key(), desired(sorry, format!("vip[{i}].sorry_server"))?);
        }
        resolved.vips.push(DesiredVip {
            key: vip.key(),
            group: config.group_of(vip.address),
            selection: selection(vip),
            timeouts: vip_timeouts(vip),
            backends,
        });
    }
    Ok(resolved)
}

/// A VIP's own timeouts in jiffies (0 where it has none: the global one applies).
pub fn vip_timeouts(vip: &VipConfig) -> FlowTimeouts {
    let jiffy_ns = clock::jiffy_ns();
    let own = |t: Option<Duration>| {
        t.map_or(0, |t| {
            clock::to_jiffies(t, jiffy_ns).min(u32::MAX as u64) as u32
        })
    };
    FlowTimeouts {
        tcp: own(vip.timeouts.tcp),
        tcp_fin: own(vip.timeouts.tcp_fin),
        udp: own(vip.timeouts.udp),
    }
}

/// A persistence mask as [`lb_common::VipInfo::persist_mask`] holds it: an IPv4 mask
/// covers the whole IPv4-mapped prefix.
fn mask_words(mask: IpAddr) -> lb_common::IpWords {
    match mask {
        IpAddr::V4(v4) => [
            u32::MAX,
            u32::MAX,
            u32::MAX,
            u32::from_ne_bytes(v4.octets()),
        ],
        IpAddr::V6(_) => lb_common::ip_words(mask),
    }
}

/// A VIP's scheduler and persistence as the datapath reads them (timeout in jiffies).
pub fn selection(vip: &VipConfig) -> Selection {
    let (persist_mask, persist_timeout) = match vip.persistence {
        Some(p) => (
            mask_words(p.netmask),
            clock::to_jiffies(p.timeout, clock::jiffy_ns()),
        ),
        None => ([0; 4], 0),
    };
    Selection {
        scheduler: vip.scheduler.datapath_value(),
        persist_mask,
        persist_timeout,
    }
}

/// The datapath settings a config asks for (durations in jiffies).
pub fn settings(config: &Config) -> Settings {
    let jiffy_ns = clock::jiffy_ns();
    Settings {
        forwarding: 1,
        sync_flows: u32::from(config.sync.is_some()),
        tcp_timeout: clock::to_jiffies(config.timeouts.tcp, jiffy_ns),
        tcp_fin_timeout: clock::to_jiffies(config.timeouts.tcp_fin, jiffy_ns),
        udp_timeout: clock::to_jiffies(config.timeouts.udp, jiffy_ns),
        touch_interval: clock::to_jiffies(Duration::from_secs(1), jiffy_ns),
        jiffy_ns,
        // A third of the shortest timeout, a VIP's own included.
        sync_refresh: clock::to_jiffies(
            config
                .vips
                .iter()
                .flat_map(|v| [v.timeouts.tcp, v.timeouts.tcp_fin, v.timeouts.udp])
                .flatten()
                .chain([
                    config.timeouts.tcp,
                    config.timeouts.tcp_fin,
                    config.timeouts.udp,
                ])
                .min()
                .unwrap_or(config.timeouts.tcp)
                / 3,
            jiffy_ns,
        )
        .max(1),
        orphan_fragments: config.orphan_fragments,
        _pad: 0,
        fragment_timeout: clock::to_jiffies(FRAGMENT_TIMEOUT, jiffy_ns),
    }
}

/// How long a fragmented datagram's first fragment is remembered (the kernel's
/// `net.ipv4.ipfrag_time`).
const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running instance.
struct Daemon {
    options: RunOptions,
    config: Config,
    dataplane: Dataplane,
    /// Owns every planner write to the maps.
    applier: Applier,
    /// The desired state of `config` (MACs resolved), before health is taken into account.
    resolved: Resolved,
    /// Health of every checked backend of `config`.
    board: Board,
    monitor: Monitor,
    /// The health state file needs rewriting (a check result came in).
    health_dirty: bool,
    /// A health-driven apply failed: retry at the next tick.
    replan_pending: bool,
    /// When the last health-driven apply ran, and when the next one is due (see
    /// [`Daemon::request_apply`]).
    last_apply: Option<tokio::time::Instant>,
    apply_due: Option<tokio::time::Instant>,
    /// VRRP's thread, when instances are configured; stopped before the dataplane goes.
    vrrp: Option<Vrrp>,
    /// Flow sync's counters, with `[sync]`.
    sync_stats: Option<std::sync::Arc<crate::sync::SyncStats>>,
    /// After adopting an earlier run's datapath, until the first checks answered.
    hold: Option<Hold>,
    /// What only the daemon counts, shared with `/metrics`.
    counters: crate::metrics::Shared,
    /// Whether each VRRP group forwards, as last switched (to count transitions).
    vrrp_forwarding: BTreeMap<u32, bool>,
    /// Declared after the dataplane so it is dropped (detach + unpin) after it.
    pinned: Pinned,
}

/// How a daemon stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Detach, unpin, remove every file: nothing is left (SIGTERM, SIGINT).
    Full,
    /// Leave the datapath attached and forwarding, with its pinned maps, for the next
    /// `lbd run` to adopt (SIGUSR2: restarts and upgrades). VRRP masters still hand over.
    KeepDatapath,
}

/// Runs until `shutdown` completes (SIGINT/SIGTERM/SIGUSR2, see `main`), then stops as it
/// says.
pub async fn run(options: RunOptions, shutdown: impl Future<Output = Stop>) -> Result<()> {
    // Held until the very end: released only once pins, pid and status files are gone, so a
    // second `lbd run` fails at once instead of taking a live instance's pins for stale.
    // Installed before start-up, so a reload asked for early is queued, not fatal.
    let mut hangups = signal(SignalKind::hangup())?;
    let (daemon, instance_lock, mut reports, inputs) = start(options).await?;
    // Locals drop in reverse order: declared after the lock, the daemon (its XDP link and
    // pins) goes before the lock on every way out, an early `?` included.
    let mut daemon = daemon;
    let Inputs {
        vrrp: mut vrrp_requests,
        synced: mut synced_flows,
    } = inputs;
    let instance = daemon.config.instance.clone();
    let pid_file = paths::pid_file(&instance);
    std::fs::create_dir_all(paths::RUN_DIR)?;
    // The config path lets `lbd reload --config FILE` refuse a FILE this daemon does not read.
    // Absolute but not resolved: a symlink is followed again at every reload.
    let config_path = std::path::absolute(&daemon.options.config_path)?;
    std::fs::write(
        &pid_file,
        format!("{}\n{}\n", std::process::id(), config_path.display()),
    )?;
    // Serving: from here a full stop detaches what this daemon adopted too.
    daemon.pinned.own();
    let mut generation = 0u64;
    write_reload_status(&instance, generation, "ok (started)");
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reports are taken in batches: with many backends, one wake-up handles what queued.
    let mut batch = Vec::with_capacity(64);
    let mut preparing: Option<tokio::task::JoinHandle<Result<(Config, Resolved)>>> = None;
    let mut again = false;
    let stop = loop {
        tokio::select! {
            stop = &mut shutdown => break stop,
            n = reports.checks.recv_many(&mut batch, 64), if !reports.checks.is_closed() || !reports.checks.is_empty() => {
                if n == 0 {
                    continue;
                }
                for report in batch.drain(..) {
                    daemon.on_report(report);
                }
            }
            Some(report) = reports.sentinels.recv() => daemon.on_sentinel(report),
            request = next_request(&mut vrrp_requests) => match request {
                Some(request) => daemon.on_vrrp(request),
                None => vrrp_requests = None,
            },
            flows = next_request(&mut synced_flows) => match flows {
                Some(flows) => daemon.on_synced(flows),
                None => synced_flows = None,
            },
            _ = tick.tick() => daemon.on_tick(),
            _ = until(daemon.apply_due) => daemon.apply_health(),
            _ = hangups.recv() => {
                // Reading the file and resolving MACs (ARP, up to 3 s) run off the loop, so
                // checks and their applies go on meanwhile; a SIGHUP during that is one more
                // reload after it.
                if preparing.is_some() {
                    again = true;
                } else {
                    generation += 1;
                    preparing = Some(daemon.prepare_reload());
                }
            }
            prepared = async { preparing.as_mut().expect("guarded").await }, if preparing.is_some() => {
                preparing = None;
                let result = prepared
                    .expect("reload task")
                    .and_then(|prepared| daemon.finish_reload(prepared));
                if let Err(err) = &result {
                    // One event, one line: a config error lists every problem.
                    error!(cause = %one_line(&err.to_string()), "reload not applied");
                }
                daemon.count_reload(&result);
                write_reload_status(&instance, generation, &reload_verdict(&result, &config_path));
                if std::mem::take(&mut again) {
                    generation += 1;
                    preparing = Some(daemon.prepare_reload());
                }
            }
        }
    };
    if let Some(vrrp) = daemon.vrrp.take() {
        // Masters hand over and remove their VIPs; the datapath forwards until detached.
        let stopping = vrrp.stop();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = &mut stopping => break,
                Some(request) = next_request(&mut vrrp_requests) => daemon.on_vrrp(request),
            }
        }
    }
    match stop {
        Stop::Full => info!(instance = %instance, "stopping: detaching and removing pins"),
        Stop::KeepDatapath => {
            daemon.pinned.keep();
            info!(instance = %instance, pins = %PinLayout::for_instance(&instance).dir.display(), "stopping, the datapath left forwarding for the next `lbd run` to take over");
        }
    }
    drop(daemon);
    // Removes the run files and the lock file, then lets the lock go.
    drop(instance_lock);
    Ok(())
}

/// The reload status line for `lbd reload`: `ok: applied FILE`; `error: ...` when the
/// running configuration was kept; `failed: ...` when the maps hold neither configuration
/// in full (an apply failed and restoring failed too).
pub fn reload_verdict(result: &Result<()>, config_path: &Path) -> String {
    match result {
        Ok(()) => format!("ok: applied {}", describe_file(config_path)),
        Err(
            err @ Error::ApplyFailed {
                restored: false, ..
            },
        ) => format!("failed: {err}"),
        Err(err) => format!("error: {err}"),
    }
}

/// `path`, and where it leads when it is a symlink (what a reload really read).
pub fn describe_file(path: &Path) -> String {
    match std::fs::canonicalize(path) {
        Ok(target) if target != path => format!("{} -> {}", path.display(), target.display()),
        _ => path.display().to_string(),
    }
}

/// Folds a multi-line message (every config error, one per line) onto one log line.
pub fn one_line(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join("; ")
}

fn write_reload_status(instance: &str, generation: u64, text: &str) {
    let path = paths::reload_status_file(instance);
    if let Err(err) = std::fs::write(&path, format!("{generation} {text}\n")) {
        warn!(path = %path.display(), cause = %err, "cannot write reload status");
    }
}

async fn start(options: RunOptions) -> Result<(Daemon, instance::InstanceLock, Reports, Inputs)> {
    let config = Config::load(&options.config_path)?;
    crate::host::require_bpf_privileges("lbd run")?;
    let layout = PinLayout::for_instance(&config.instance);
    let instance_lock = instance::lock(&config.instance)?;
    // Ours now: files a crashed daemon left must not speak for this one while it starts.
    for stale in paths::run_files(&config.instance) {
        let _ = std::fs::remove_file(stale);
    }
    if !pins::is_bpffs(Path::new(paths::BPFFS)) {
        return Err(crate::host::no_bpffs());
    }
    // What an earlier run left: adopted when it still forwards and has this layout; refused
    // (and left forwarding) when it has another; removed when nothing is attached.
    let object = object::lb()?;
    let mode = options.xdp_mode.unwrap_or(config.xdp_mode);
    let adoptable = match adopt::inspect(&layout, object, config.max_flows)? {
        adopt::Found::Adoptable(found) => {
            if let Some(refused) = adopt::mode_changed(&found, mode, &layout) {
                return Err(refused);
            }
            Some(found)
        }
        adopt::Found::Nothing => {
            if layout.dir.exists() {
                warn!(dir = %layout.dir.display(), "removing pins left by an lbd that did not stop cleanly (nothing attached)");
                pins::remove_stale(&layout).map_err(|cause| Error::Pin {
                    what: "removing",
                    path: layout.dir.clone(),
                    cause,
                })?;
            }
            None
        }
    };
    let interfaces = config
        .interfaces
        .iter()
        .map(|name| {
            netdev::interface(name).map_err(|cause| Error::Interface {
                name: name.clone(),
                cause,
            })
        })
        .collect::<Result<Vec<InterfaceInfo>>>()?;
    vrrp::service::check_tracked_interfaces(&config, &options.config_path)?;
    let resolved = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || resolve(&config))
            .await
            .expect("resolver task")?
    };
    // Checked backends start down (unless `initial = "up"`): none takes flows before its
    // first successful check.
    let mut board = Board::default();
    let checks = board.sync(&config, std::time::SystemTime::now());

    let options_load = LoadOptions {
        max_flows: config.max_flows,
        log_level: options.datapath_log_level,
    };
    let mut dataplane = match &adoptable {
        Some(found) => {
            info!(dir = %layout.dir.display(), interfaces = ?found.links, "taking over the datapath an earlier lbd left attached: tracked connections and counters are kept");
            for (map, capacity) in &found.resized {
                warn!(
                    map,
                    capacity,
                    max_flows = config.max_flows,
                    "the adopted connection table keeps its capacity: max_flows takes effect after `lbd stop` and a start"
                );
            }
            Dataplane::load_adopting(object, &options_load, &layout)?
        }
        None => Dataplane::load(object, &options_load)?,
    };
    dataplane.spawn_log_forwarder();
    let mut applier = match &adoptable {
        Some(_) => Applier::adopted(&contents::read(&dataplane)?),
        None => Applier::new(),
    };
    // Which VRRP groups forward now (to count transitions from there): as adopted, or none.
    let vrrp_forwarding = match &adoptable {
        Some(_) => contents::group_forwarding(&dataplane, config.vrrp.len() as u32)?,
        None => BTreeMap::new(),
    };
    // Until their first checks, checked backends keep what the adopted maps give them.
    let hold = adoptable.as_ref().map(|_| {
        Hold::new(
            &config,
            applier.reconciler().applied_backends(),
            &mut board,
            std::time::Instant::now(),
        )
    });
    let (mut desired, events) = board.effective(&config, &resolved);
    log_events(&events);
    if let Some(hold) = &hold {
        hold.keep(&config, &resolved, &mut desired);
    }
    {
        let mut writer = dataplane.writer();
        writer.set_settings(settings(&config))?;
        let ifaces: Vec<(u32, [u8; 6])> = interfaces.iter().map(|i| (i.ifindex, i.mac)).collect();
        writer.set_interfaces(&ifaces)?;
        // Every VRRP instance starts as a backup: its VIPs pass until it is elected. Not in
        // adopted maps: the old program still forwards from them, and a master's VIP may
        // still be on the interface, where passed frames would be answered with RST. The
        // router's first Backup step removes the VIP, then switches forwarding off.
        if adoptable.is_none() {
            for group in 1..=config.vrrp.len() as u32 {
                writer.set_group_standby(group, true)?;
            }
        }
    }
    let ops = applier.apply(&mut dataplane, &desired)?;
    if adoptable.is_some() {
        info!(
            map_writes = ops,
            "applied the configuration to the adopted maps"
        );
    }
    if mode == XdpModeSetting::Skb {
        warn!(
            "generic (skb) XDP: slower than native, for drivers without XDP support and for tests"
        );
    }
    let pinned = match &adoptable {
        Some(found) => Pinned::adopt(&mut dataplane, layout.clone(), found, &interfaces, mode)?,
        None => {
            let mut pinned = Pinned::pin(&mut dataplane, layout.clone())?;
            pins::write_pin_info(&mut dataplane, mode)?;
            for iface in &interfaces {
                pinned.attach(&mut dataplane, iface, mode)?;
                info!(interface = %iface.name, mac = %format_mac(&iface.mac), ifindex = iface.ifindex, "attached");
            }
            pinned
        }
    };
    for vip in &config.vips {
        info!(
            vip = %vip.address, port = vip.port, protocol = %vip.protocol, scheduler = %vip.scheduler,
            backends = vip.backends.len(), "serving"
        );
    }
    let sync_stats = config.sync.as_ref().map(|_| std::sync::Arc::default());
    let synced = match (&config.sync, &sync_stats) {
        (Some(sync), Some(stats)) => {
            let events = dataplane.take_flow_events()?;
            let received = crate::sync::start(sync, events, std::sync::Arc::clone(stats))
                .await
                .map_err(|err| {
                    Error::Vrrp(format!("flow sync on UDP port {}: {err}", sync.port))
                })?;
            info!(peers = ?sync.peers, port = sync.port, "flow sync started");
            Some(received)
        }
        _ => None,
    };
    let (vrrp, vrrp_requests) = match Vrrp::start(&config)? {
        Some((vrrp, requests)) => (Some(vrrp), Some(requests)),
        None => (None, None),
    };
    let (mut monitor, reports) = Monitor::new();
    if !checks.start.is_empty() {
        info!(backends = checks.start.len(), "health checks started");
    }
    monitor.apply(checks);
    info!(instance = %config.instance, pins = %layout.dir.display(), "running");
    let mut daemon = Daemon {
        options,
        config,
        dataplane,
        applier,
        resolved,
        board,
        monitor,
        health_dirty: true,
        replan_pending: false,
        last_apply: None,
        apply_due: None,
        vrrp,
        sync_stats,
        hold,
        counters: Default::default(),
        vrrp_forwarding,
        pinned,
    };
    if let Some(listen) = daemon.config.metrics {
        match crate::metrics::serve(
            listen,
            daemon.config.instance.clone(),
            daemon.counters.clone(),
        )
        .await
        {
            Ok(()) => info!(%listen, "serving Prometheus metrics at /metrics"),
            Err(err) => {
                error!(%listen, cause = %err, "cannot serve /metrics (set [metrics] listen, or enabled = false); balancing goes on without it")
            }
        }
    }
    daemon.report_pools(&desired);
    daemon.on_tick();
    let inputs = Inputs {
        vrrp: vrrp_requests,
        synced,
    };
    Ok((daemon, instance_lock, reports, inputs))
}

impl Daemon {
    /// Starts a reload: reads and validates the file and resolves MACs on the blocking pool,
    /// off the daemon's loop. Nothing changes until [`Daemon::finish_reload`].
    fn prepare_reload(&self) -> tokio::task::JoinHandle<Result<(Config, Resolved)>> {
        let path = self.options.config_path.clone();
        let old = self.config.clone();
        tokio::task::spawn_blocking(move || {
            let new = Config::load(&path)?;
            for (key, changed) in [
                ("instance", new.instance != old.instance),
                ("director.interfaces", new.interfaces != old.interfaces),
                ("director.xdp_mode", new.xdp_mode != old.xdp_mode),
                ("director.max_flows", new.max_flows != old.max_flows),
                ("vrrp", new.vrrp != old.vrrp),
                (
                    "vrrp_sync_group",
                    new.vrrp_sync_groups != old.vrrp_sync_groups,
                ),
                ("sync", new.sync != old.sync),
                ("metrics", new.metrics != old.metrics),
            ] {
                if changed {
                    return Err(Error::ReloadRefused(format!(
                        "{}: {key} changed; that needs a restart",
                        path.display()
                    )));
                }
            }
            let resolved = resolve(&new)?;
            Ok((new, resolved))
        })
    }

    /// Applies a prepared reload, with health as it is now. Validation, MAC resolution and
    /// planning all happen before the first map write, so a bad file or an unreachable
    /// backend changes nothing. A map write failing midway (not expected: capacities are
    /// validated) is reported, and the running configuration is applied again from what the
    /// maps really hold (see [`Applier`]); if that fails too, the next reload does it.
    fn finish_reload(&mut self, (new, resolved): (Config, Resolved)) -> Result<()> {
        // Planned on a copy: a failed apply leaves the running state as it was.
        let mut board = self.board.clone();
        let checks = board.sync(&new, std::time::SystemTime::now());
        let (mut desired, events) = board.effective(&new, &resolved);
        if let Some(hold) = &self.hold {
            hold.keep(&new, &resolved, &mut desired);
        }
        // Written whole every time: after an earlier failure the map may hold other values
        // than `old` says.
        self.dataplane.writer().set_settings(settings(&new))?;
        match self.applier.apply(&mut self.dataplane, &desired) {
            Ok(ops) => {
                info!(
                    map_writes = ops,
                    vips = new.vips.len(),
                    checks_started = checks.start.len(),
                    checks_stopped = checks.stop.len(),
                    "reloaded"
                );
                log_events(&events);
                self.monitor.apply(checks);
                if let Ok(mut counters) = self.counters.lock() {
                    // Backends no longer configured leave the metrics.
                    let kept: BTreeSet<(String, String)> = new
                        .vips
                        .iter()
                        .flat_map(|v| {
                            let service = crate::metrics::render::service(
                                v.address,
                                v.port,
                                &v.protocol.to_string(),
                            );
                            v.backends
                                .iter()
                                .map(move |b| (service.clone(), b.address.to_string()))
                        })
                        .collect();
                    counters.check_seconds.retain(|key, _| kept.contains(key));
                }
                self.config = new;
                self.resolved = resolved;
                self.board = board;
                self.write_health();
                self.report_pools(&desired);
                Ok(())
            }
            Err(err) => Err(self.roll_back(err)),
        }
    }

    /// Counts a reload's result for `/metrics`.
    fn count_reload(&self, result: &Result<()>) {
        let kind = match result {
            Ok(()) => "ok",
            Err(Error::ApplyFailed {
                restored: false, ..
            }) => "failed",
            Err(_) => "rejected",
        };
        if let Ok(mut counters) = self.counters.lock() {
            *counters.reloads.entry(kind).or_default() += 1;
        }
    }

    /// Tells VRRP which instances have a VIP with no backend in service (`track_pool_weight`).
    fn report_pools(&self, desired: &[DesiredVip]) {
        let Some(vrrp) = &self.vrrp else { return };
        let mut empty = vec![false; self.config.vrrp.len()];
        for vip in desired.iter().filter(|v| v.group != 0) {
            // A sorry server standing in is no backend in service.
            let sorry = self.resolved.sorry.get(&vip.key).map(|s| s.addr);
            if vip
                .backends
                .iter()
                .all(|b| b.weight == 0 || Some(b.addr) == sorry)
            {
                empty[vip.group as usize - 1] = true;
            }
        }
        vrrp.set_pools(&empty);
    }

    /// Switches a VRRP instance's forwarding group, at once: a new master's clients wait
    /// for it.
    fn on_vrrp(&mut self, request: vrrp::Request) {
        let vrrp::Request::Forward { group, on, done } = request;
        let result = self.dataplane.writer().set_group_standby(group, !on);
        // A transition is a change: the Backup step at start (already not forwarding) or a
        // repeated request is none.
        let was = self.vrrp_forwarding.get(&group).copied().unwrap_or(false);
        if result.is_ok() {
            self.vrrp_forwarding.insert(group, on);
        }
        if result.is_ok()
            && was != on
            && let (Some(instance), Ok(mut counters)) = (
                (group as usize)
                    .checked_sub(1)
                    .and_then(|i| self.config.vrrp.get(i)),
                self.counters.lock(),
            )
        {
            *counters
                .vrrp_transitions
                .entry(instance.name.clone())
                .or_default() += 1;
        }
        if let Err(err) = &result {
            error!(group, on, cause = %err, "switching VRRP forwarding failed");
        }
        let _ = done.send(result.is_ok());
    }

    /// Installs flows another director scheduled, each to the backend of the same address
    /// here (unknown backends are skipped: that flow will be scheduled afresh).
    fn on_synced(&mut self, events: Vec<lb_common::FlowEvent>) {
        let now = match clock::now(self.dataplane.clock_program()) {
            Ok(now) => now,
            Err(err) => {
                warn!(cause = %err, "reading the datapath clock failed; synced flows dropped");
                return;
            }
        };
        let done = match crate::sync::install::install(
            &mut self.dataplane.writer(),
            self.applier.reconciler(),
            &events,
            now,
        ) {
            Ok(done) => done,
            Err(err) => {
                warn!(cause = %err, "installing synced flows failed");
                return;
            }
        };
        let skipped = done.skipped;
        if let Some(stats) = &self.sync_stats {
            use std::sync::atomic::Ordering::Relaxed;
            stats.skipped.fetch_add(done.skipped, Relaxed);
            stats.installed.fetch_add(done.installed, Relaxed);
        }
        if skipped > 0 {
            debug!(
                skipped,
                "synced flows to backends unknown here were skipped"
            );
        }
    }

    /// Records a check result; re-plans the maps when it changes what a backend may take.
    fn on_report(&mut self, report: Report) {
        let (vip_key, addr) = report.key;
        let Some(vip) = self.config.vips.iter().find(|v| v.key() == vip_key) else {
            return;
        };
        let (service, max_lag) = (
            std::net::SocketAddr::new(vip.address, vip.port).to_string(),
            vip.max_lag,
        );
        let reason = report.outcome.reason.clone();
        if let Ok(mut counters) = self.counters.lock() {
            counters.check_seconds.insert(
                (
                    crate::metrics::render::service(
                        vip.address,
                        vip.port,
                        &vip.protocol.to_string(),
                    ),
                    addr.to_string(),
                ),
                report.took.as_secs_f64(),
            );
        }
        let recorded = self.board.record(
            report.key,
            report.checker,
            report.outcome,
            max_lag,
            std::time::SystemTime::now(),
        );
        self.health_dirty = true;
        if recorded.went.is_some()
            && let Ok(mut counters) = self.counters.lock()
        {
            counters.health_transitions += 1;
        }
        match recorded.went {
            Some(true) => info!(vip = %service, backend = %addr, %reason, "backend up"),
            Some(false) => warn!(vip = %service, backend = %addr, %reason, "backend down"),
            None => {}
        }
        if let Some(up) = recorded.went {
            let own = vip
                .backends
                .iter()
                .find(|b| b.address == addr)
                .map(|b| &b.notify);
            let pick = |n: &crate::config::Notify| if up { n.up.clone() } else { n.down.clone() };
            if let Some(argv) = own.and_then(pick).or_else(|| pick(&vip.notify)) {
                health::notify::spawn(
                    argv,
                    vec![
                        std::net::SocketAddr::new(addr, vip.port).to_string(),
                        service.clone(),
                        reason.clone(),
                    ],
                    vec![
                        ("LBD_BACKEND", addr.to_string()),
                        ("LBD_PORT", vip.port.to_string()),
                        ("LBD_VIP", vip.address.to_string()),
                    ],
                );
            }
        }
        if recorded.replan {
            self.request_apply();
        }
        self.check_hold();
    }

    /// Applies health changes now, or, within [`APPLY_GAP`] of the last apply, once that
    /// gap has passed: one lone change applies at once, a burst (a thousand backends coming
    /// up at start) costs a few plans, not one each.
    fn request_apply(&mut self) {
        let now = tokio::time::Instant::now();
        match self.last_apply {
            Some(last) if now < last + APPLY_GAP => {
                self.apply_due.get_or_insert(last + APPLY_GAP);
            }
            _ => self.apply_health(),
        }
    }

    /// Records what Sentinel says of a write VIP's master; re-plans when it changed.
    fn on_sentinel(&mut self, report: SentinelReport) {
        let vip = report.vip.address();
        let port = u16::from_be(report.vip.port);
        if !self
            .board
            .record_sentinel(report.vip, report.watcher, report.master)
        {
            if report.via.contains("+switch-master") {
                info!(vip = %std::net::SocketAddr::new(vip, port), via = %report.via, "Sentinel confirms the master");
            }
            return;
        }
        match report.master {
            Some(master) => {
                info!(vip = %std::net::SocketAddr::new(vip, port), %master, via = %report.via, "Sentinel names the master")
            }
            None => {
                warn!(vip = %std::net::SocketAddr::new(vip, port), reason = %report.via, "no answer from Sentinel: following the masters' own role reports")
            }
        }
        self.request_apply();
    }

    /// Applies the running config as health now sees it.
    fn apply_health(&mut self) {
        self.apply_due = None;
        self.last_apply = Some(tokio::time::Instant::now());
        let (desired, events) = self.effective();
        log_events(&events);
        // What `lbd status` shows must not lag the maps: written before they change.
        self.write_health();
        self.report_pools(&desired);
        match self.applier.apply(&mut self.dataplane, &desired) {
            Ok(ops) => {
                self.replan_pending = false;
                if ops > 0 {
                    info!(map_writes = ops, "applied health changes");
                }
            }
            Err(err) => {
                self.replan_pending = true;
                error!(cause = %one_line(&err.to_string()), "applying health changes failed; retrying in a second from what the maps hold");
            }
        }
    }

    /// Once a second: retries a failed apply and refreshes the health state file.
    fn on_tick(&mut self) {
        self.check_hold();
        if self.replan_pending {
            self.apply_health();
        }
        if self.health_dirty {
            self.write_health();
        }
        if let Some(stats) = &self.sync_stats {
            let path = paths::sync_file(&self.config.instance);
            if let Err(err) = std::fs::write(&path, format!("{}\n", stats.line())) {
                warn!(path = %path.display(), cause = %err, "cannot write the sync state file");
            }
        }
    }

    /// The state to apply for the running config: health's, and while holding after an
    /// adoption, the adopted backends of checked VIPs (see [`Hold`]).
    fn effective(&mut self) -> (Vec<DesiredVip>, Vec<health::board::Event>) {
        let (mut desired, events) = self.board.effective(&self.config, &self.resolved);
        if let Some(hold) = &self.hold {
            hold.keep(&self.config, &self.resolved, &mut desired);
        }
        (desired, events)
    }

    /// Ends the hold once every held backend was checked (or its deadline passed), and
    /// applies health as it now is.
    fn check_hold(&mut self) {
        let Some(hold) = &self.hold else { return };
        if hold.done(&self.config, &self.board, std::time::Instant::now()) {
            self.hold = None;
            info!("first health checks answered: health decides from now on");
            self.request_apply();
        }
    }

    fn write_health(&mut self) {
        self.health_dirty = false;
        let path = paths::health_file(&self.config.instance);
        let lines = health::report::lines(&self.config, &self.board);
        if let Err(err) = health::report::write(&path, &lines) {
            warn!(path = %path.display(), cause = %err, "cannot write the health state file");
        }
    }

    /// After a failed apply: re-applies the running configuration (settings and VIPs) from
    /// what the maps hold, and returns the error to report.
    fn roll_back(&mut self, err: Error) -> Error {
        let restored = self
            .dataplane
            .writer()
            .set_settings(settings(&self.config))
            .and_then(|()| {
                let (desired, _) = self.effective();
                self.applier.apply(&mut self.dataplane, &desired)
            });
        match restored {
            Ok(ops) => {
                warn!(
                    map_writes = ops,
                    "a map write failed; the running configuration was restored"
                );
                Error::ApplyFailed {
                    cause: Box::new(err),
                    restored: true,
                }
            }
            Err(again) => {
                error!(cause = %again, "restoring the running configuration failed too; the next reload re-reads the maps and retries");
                Error::ApplyFailed {
                    cause: Box::new(err),
                    restored: false,
                }
            }
        }
    }
}

fn log_events(events: &[health::board::Event]) {
    for event in events {
        if event.is_error() {
            error!("{event}");
        } else {
            info!("{event}");
        }
    }
}
