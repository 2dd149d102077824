//! `lbd run`: load, write the maps, attach, then follow SIGHUP reloads until shutdown.

use std::{
    collections::BTreeMap,
    future::Future,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::Settings;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    apply::Applier,
    config::{Config, XdpModeSetting, format_mac},
    dataplane::{
        DatapathLogLevel, Dataplane, LoadOptions, clock, object,
        pins::{self, Pinned},
    },
    error::{Error, Result},
    instance,
    netdev::{self, InterfaceInfo},
    paths::{self, PinLayout},
    reconcile::{DesiredBackend, DesiredVip},
};

/// How `lbd run` was asked to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Overrides the config's `director.xdp_mode`.
    pub xdp_mode: Option<XdpModeSetting>,
    pub datapath_log_level: DatapathLogLevel,
}

/// How long MAC resolution waits for ARP replies.
const ARP_WAIT: Duration = Duration::from_secs(3);

/// Turns a validated config into the state the maps should hold, resolving backend MACs
/// through the neighbour table when the config does not fix them.
pub fn desired_state(config: &Config) -> Result<Vec<DesiredVip>> {
    let unresolved: Vec<Ipv4Addr> = config
        .vips
        .iter()
        .flat_map(|v| &v.backends)
        .filter(|b| b.mac.is_none())
        .map(|b| b.address)
        .collect();
    let neighbours = if unresolved.is_empty() {
        BTreeMap::new()
    } else {
        netdev::resolve(&unresolved, &config.interfaces, ARP_WAIT)?
    };
    desired_state_with(config, &neighbours)
}

/// [`desired_state`] with the neighbour table given (a configured MAC wins).
pub fn desired_state_with(
    config: &Config,
    neighbours: &BTreeMap<Ipv4Addr, [u8; 6]>,
) -> Result<Vec<DesiredVip>> {
    let mut vips = Vec::new();
    for (i, vip) in config.vips.iter().enumerate() {
        let mut backends = Vec::new();
        for (j, b) in vip.backends.iter().enumerate() {
            let Some(mac) = b.mac.or_else(|| neighbours.get(&b.address).copied()) else {
                return Err(Error::Unresolved {
                    addr: b.address,
                    key: format!("vip[{i}].backend[{j}]"),
                    interfaces: config.interfaces.join(", "),
                });
            };
            backends.push(DesiredBackend {
                addr: b.address,
                weight: b.weight,
                mac,
            });
        }
        if backends.iter().all(|b| b.weight == 0) {
            warn!(vip = %vip.address, port = vip.port, "every backend has weight 0: new flows to this VIP are dropped");
        }
        vips.push(DesiredVip {
            key: vip.key(),
            backends,
        });
    }
    Ok(vips)
}

/// The datapath settings a config asks for (durations in jiffies).
pub fn settings(config: &Config) -> Settings {
    let jiffy_ns = clock::jiffy_ns();
    Settings {
        forwarding: 1,
        _pad: 0,
        tcp_timeout: clock::to_jiffies(config.timeouts.tcp, jiffy_ns),
        tcp_fin_timeout: clock::to_jiffies(config.timeouts.tcp_fin, jiffy_ns),
        udp_timeout: clock::to_jiffies(config.timeouts.udp, jiffy_ns),
        touch_interval: clock::to_jiffies(Duration::from_secs(1), jiffy_ns),
        jiffy_ns,
    }
}

/// A running instance.
struct Daemon {
    options: RunOptions,
    config: Config,
    dataplane: Dataplane,
    /// Owns every planner write to the maps.
    applier: Applier,
    /// The desired state of `config`, as last applied in full: what a failed reload rolls
    /// back to.
    desired: Vec<DesiredVip>,
    /// Declared after the dataplane so it is dropped (detach + unpin) after it.
    _pinned: Pinned,
}

/// Runs until `shutdown` completes (or SIGINT/SIGTERM arrive, see `main`), then detaches
/// and removes every pin.
pub async fn run(options: RunOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    // Held until the very end: released only once pins, pid and status files are gone, so a
    // second `lbd run` fails at once instead of taking a live instance's pins for stale.
    // Installed before start-up, so a reload asked for early is queued, not fatal.
    let mut hangups = signal(SignalKind::hangup())?;
    let started = start(options).await?;
    // Declared before the daemon so it is dropped after it, on every path.
    let instance_lock = started.1;
    let mut daemon = started.0;
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
    let mut generation = 0u64;
    write_reload_status(&instance, generation, "ok (started)");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangups.recv() => {
                generation += 1;
                match daemon.reload().await {
                    Ok(()) => write_reload_status(
                        &instance,
                        generation,
                        &format!("ok: applied {}", describe_file(&config_path)),
                    ),
                    Err(err) => {
                        // One event, one line: a config error lists every problem.
                        error!(cause = %one_line(&err.to_string()), "reload not applied");
                        write_reload_status(&instance, generation, &format!("error: {err}"));
                    }
                }
            }
        }
    }
    info!(instance = %instance, "stopping: detaching and removing pins");
    drop(daemon);
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(paths::reload_status_file(&instance));
    drop(instance_lock);
    Ok(())
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

async fn start(options: RunOptions) -> Result<(Daemon, std::fs::File)> {
    let config = Config::load(&options.config_path)?;
    crate::host::require_bpf_privileges("lbd run")?;
    let layout = PinLayout::for_instance(&config.instance);
    let instance_lock = instance::lock(&config.instance)?;
    // Ours now: files a crashed daemon left must not speak for this one while it starts.
    for stale in [
        paths::pid_file(&config.instance),
        paths::reload_status_file(&config.instance),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    if !pins::is_bpffs(Path::new(paths::BPFFS)) {
        return Err(crate::host::no_bpffs());
    }
    if layout.dir.exists() {
        warn!(dir = %layout.dir.display(), "removing pins left by an lbd that did not stop cleanly");
        pins::remove_stale(&layout).map_err(|cause| Error::Pin {
            what: "removing",
            path: layout.dir.clone(),
            cause,
        })?;
    }
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
    let desired = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || desired_state(&config))
            .await
            .expect("resolver task")?
    };

    let mut dataplane = Dataplane::load(
        object::lb()?,
        &LoadOptions {
            max_flows: config.max_flows,
            log_level: options.datapath_log_level,
        },
    )?;
    dataplane.spawn_log_forwarder();
    let mut applier = Applier::new();
    {
        let mut writer = dataplane.writer();
        writer.set_settings(settings(&config))?;
        for iface in &interfaces {
            writer.set_interface(iface.ifindex, iface.mac)?;
        }
    }
    applier.apply(&mut dataplane, &desired)?;
    let mode = options.xdp_mode.unwrap_or(config.xdp_mode);
    if mode == XdpModeSetting::Skb {
        warn!(
            "generic (skb) XDP: slower than native, for drivers without XDP support and for tests"
        );
    }
    let mut pinned = Pinned::pin(&mut dataplane, layout.clone())?;
    for iface in &interfaces {
        pinned.attach(&mut dataplane, iface, mode)?;
        info!(interface = %iface.name, mac = %format_mac(&iface.mac), ifindex = iface.ifindex, "attached");
    }
    for vip in &config.vips {
        info!(
            vip = %vip.address, port = vip.port, protocol = %vip.protocol, scheduler = %vip.scheduler,
            backends = vip.backends.len(), "serving"
        );
    }
    info!(instance = %config.instance, pins = %layout.dir.display(), "running");
    Ok((
        Daemon {
            options,
            config,
            dataplane,
            applier,
            desired,
            _pinned: pinned,
        },
        instance_lock,
    ))
}

impl Daemon {
    /// Re-reads the config and applies the difference. Validation, MAC resolution and
    /// planning all happen before the first map write, so a bad file or an unreachable
    /// backend changes nothing. A map write failing midway (not expected: capacities are
    /// validated) is reported, and the running configuration is applied again from what the
    /// maps really hold (see [`Applier`]); if that fails too, the next reload does it.
    async fn reload(&mut self) -> Result<()> {
        let new = Config::load(&self.options.config_path)?;
        let old = &self.config;
        for (key, changed) in [
            ("instance", new.instance != old.instance),
            ("director.interfaces", new.interfaces != old.interfaces),
            ("director.xdp_mode", new.xdp_mode != old.xdp_mode),
            ("director.max_flows", new.max_flows != old.max_flows),
        ] {
            if changed {
                return Err(Error::ReloadRefused(format!(
                    "{}: {key} changed; that needs a restart",
                    self.options.config_path.display()
                )));
            }
        }
        let desired = {
            let config = new.clone();
            tokio::task::spawn_blocking(move || desired_state(&config))
                .await
                .expect("resolver task")?
        };
        // Written whole every time: after an earlier failure the map may hold other values
        // than `old` says.
        self.dataplane.writer().set_settings(settings(&new))?;
        match self.applier.apply(&mut self.dataplane, &desired) {
            Ok(ops) => {
                info!(map_writes = ops, vips = new.vips.len(), "reloaded");
                self.config = new;
                self.desired = desired;
                Ok(())
            }
            Err(err) => Err(self.roll_back(err)),
        }
    }

    /// After a failed apply: re-applies the running configuration (settings and VIPs) from
    /// what the maps hold, and returns the error to report.
    fn roll_back(&mut self, err: Error) -> Error {
        let restored = self
            .dataplane
            .writer()
            .set_settings(settings(&self.config))
            .and_then(|()| self.applier.apply(&mut self.dataplane, &self.desired));
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
