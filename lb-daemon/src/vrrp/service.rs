//! VRRP's own thread: every instance's sockets and timers run on a runtime of their own, so
//! map writes, health checks and reloads on the daemon's loop never delay an advert. The
//! daemon gets [`Request`]s (forwarding on or off) and answers them; it never hears of
//! sockets or addresses.

use std::{
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::{
    addresses::Addresses,
    report::{self, VrrpLine},
    router::{Placement, Request, Router},
    socket::{AdvertSocket, ArpSocket, primary_address},
};
use crate::{
    config::{Config, ConfigError, ConfigErrors, element_error},
    error::{Error, Result},
    netdev, paths,
};

/// The running VRRP thread.
pub struct Vrrp {
    stop: watch::Sender<bool>,
    /// Per instance (config order): a VIP of it has no backend in service.
    pool_empty: Vec<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

/// Refuses a `track_interface` that does not exist: it would hold its instance in FAULT for
/// ever, without a word. The error names file, line and key. Checked before anything loads.
pub fn check_tracked_interfaces(config: &Config, config_path: &std::path::Path) -> Result<()> {
    let missing: Vec<ConfigError> = config
        .vrrp
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            v.track_interfaces
                .iter()
                .enumerate()
                .filter(|(_, name)| netdev::interface(name).is_err())
                .map(move |(j, name)| {
                    element_error(
                        config_path,
                        ("vrrp", i, "track_interface", j),
                        format!("{name:?}: no such interface in this network namespace"),
                    )
                })
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(ConfigErrors(missing)))
    }
}

/// How long a stop may take (adverts of priority 0, removing the VIPs) before the daemon
/// detaches anyway.
const STOP_WAIT: Duration = Duration::from_secs(3);

impl Vrrp {
    /// Starts every instance of `config` (none: `None`). Fails, with nothing started, when
    /// an interface, its address or a socket is missing.
    pub fn start(config: &Config) -> Result<Option<(Vrrp, mpsc::UnboundedReceiver<Request>)>> {
        if config.vrrp.is_empty() {
            return Ok(None);
        }
        let mut placements = Vec::new();
        for (i, v) in config.vrrp.iter().enumerate() {
            let iface = netdev::interface(&v.interface).map_err(|cause| Error::Interface {
                name: v.interface.clone(),
                cause,
            })?;
            let source = match v.unicast_src {
                Some(src) => src,
                None => primary_address(&v.interface)?.ok_or_else(|| {
                    Error::Vrrp(format!(
                        "vrrp[{i}] ({}): {} has no IPv4 address to send adverts from; add one or set unicast_src",
                        v.name, v.interface
                    ))
                })?,
            };
            placements.push(Placement {
                ifindex: iface.ifindex,
                mac: iface.mac,
                source,
            });
        }
        let (pool_empty, pool_rx): (Vec<_>, Vec<_>) =
            config.vrrp.iter().map(|_| watch::channel(false)).unzip();
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let (ready, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("lbd-vrrp".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready.send(Err(err.into()));
                        return;
                    }
                };
                runtime.block_on(serve(config, placements, pool_rx, requests, stop_rx, ready));
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Some((
                Vrrp {
                    stop,
                    pool_empty,
                    thread: Some(thread),
                },
                request_rx,
            ))),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            Err(_) => Err(Error::Vrrp("the VRRP thread ended at start".into())),
        }
    }

    /// Tells each instance whether one of its VIPs has no backend in service (by group:
    /// `empty[g - 1]` for group `g`).
    pub fn set_pools(&self, empty: &[bool]) {
        for (sender, &empty) in self.pool_empty.iter().zip(empty) {
            sender.send_if_modified(|old| std::mem::replace(old, empty) != empty);
        }
    }

    /// Hands over (masters send priority 0) and removes the VIPs; waits at most
    /// [`STOP_WAIT`].
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(STOP_WAIT, joined).await.is_err() {
            warn!("VRRP did not stop in time; detaching anyway");
        }
    }
}

async fn serve(
    config: Config,
    placements: Vec<Placement>,
    pool_rx: Vec<watch::Receiver<bool>>,
    requests: mpsc::UnboundedSender<Request>,
    stop: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) {
    // One channel per sync group; every member sends its moves and hears the others'.
    let group_channels: Vec<tokio::sync::broadcast::Sender<(usize, super::machine::State)>> =
        config
            .vrrp_sync_groups
            .iter()
            .map(|_| tokio::sync::broadcast::channel(64).0)
            .collect();
    let opened = (|| -> Result<Vec<Router>> {
        let addresses = Addresses::open()?;
        let changed = Arc::new(tokio::sync::Notify::new());
        let mut routers = Vec::new();
        for (i, ((v, placement), pool_empty)) in
            config.vrrp.iter().zip(&placements).zip(pool_rx).enumerate()
        {
            let socket = AdvertSocket::open(
                &v.interface,
                placement.ifindex,
                placement.source,
                !v.unicast_peers.is_empty(),
            )
            .map_err(|err| {
                Error::Vrrp(format!(
                    "vrrp[{i}] ({}): cannot open the VRRP socket on {}: {err}",
                    v.name, v.interface
                ))
            })?;
            let arp = ArpSocket::open(placement.ifindex)?;
            let siblings = config
                .vrrp
                .iter()
                .filter(|o| o.interface == v.interface && o.name != v.name)
                .map(|o| o.virtual_router_id)
                .collect();
            routers.push(Router {
                config: v.clone(),
                group: config.group_of(v.vips[0].into()),
                placement: placement.clone(),
                socket,
                addresses: addresses.clone(),
                arp,
                requests: requests.clone(),
                status: Arc::new(Mutex::new(VrrpLine {
                    name: v.name.clone(),
                    interface: v.interface.clone(),
                    vrid: v.virtual_router_id,
                    state: "init".into(),
                    priority: v.priority,
                    master: None,
                    since: SystemTime::now(),
                    sent: 0,
                    received: 0,
                    rejected: Default::default(),
                    reason: "starting".into(),
                })),
                changed: changed.clone(),
                siblings,
                pool_empty,
                group_link: config
                    .vrrp_sync_groups
                    .iter()
                    .zip(&group_channels)
                    .find(|(g, _)| g.instances.contains(&i))
                    .map(|(g, tx)| super::router::GroupLink {
                        name: g.name.clone(),
                        me: i,
                        names: config.vrrp.iter().map(|v| v.name.clone()).collect(),
                        tx: tx.clone(),
                        rx: tx.subscribe(),
                    }),
            });
        }
        Ok(routers)
    })();
    let routers = match opened {
        Ok(routers) => routers,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let statuses: Vec<_> = routers.iter().map(|r| r.status.clone()).collect();
    let changed = routers[0].changed.clone();
    let path = paths::vrrp_file(&config.instance);
    let writer = {
        let statuses = statuses.clone();
        let path = path.clone();
        tokio::spawn(async move {
            // Counters move with every advert: written at most once a second; transitions
            // at once.
            loop {
                write_status(&path, &statuses);
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };
    let tasks: Vec<_> = routers
        .into_iter()
        .map(|r| tokio::spawn(r.run(stop.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    writer.abort();
    write_status(&path, &statuses);
}

fn write_status(path: &std::path::Path, statuses: &[Arc<Mutex<VrrpLine>>]) {
    let lines: Vec<VrrpLine> = statuses
        .iter()
        .map(|s| s.lock().expect("status").clone())
        .collect();
    if let Err(err) = report::write(path, &lines) {
        warn!(path = %path.display(), cause = %err, "cannot write the VRRP state file");
    }
}
