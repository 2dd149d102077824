//! bpffs, pins and attachment. A running instance owns
//! `/sys/fs/bpf/lbd/<instance>/` (see [`PinLayout`]); a normal stop removes all of it,
//! which also detaches the program.

use std::{collections::BTreeMap, fs, io, path::Path};

use aya::{
    maps::{Map, MapData},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use lb_common::ALL_MAPS;

use super::{Dataplane, snapshot::MapSource};
use crate::{
    config::XdpModeSetting,
    error::{Error, Result},
    netdev::InterfaceInfo,
    paths::PinLayout,
};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed struct from a valid C path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(cpath.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// An instance's pins and attachments. Dropping it detaches and unpins everything, unless
/// [`Pinned::keep`] was called (a stop that leaves the datapath to the next `lbd run`).
pub struct Pinned {
    layout: PinLayout,
    links: Vec<(String, PinnedLink)>,
    keep: bool,
}

fn pin_err(what: &'static str, path: &Path) -> impl Fn(aya::pin::PinError) -> Error + use<> {
    let path = path.to_owned();
    move |cause| Error::Pin {
        what,
        path: path.clone(),
        cause: io::Error::other(cause.to_string()),
    }
}

impl Pinned {
    /// Pins the maps and the program of `dataplane` under `layout` (which must not exist).
    pub fn pin(dataplane: &mut Dataplane, layout: PinLayout) -> Result<Pinned> {
        if !is_bpffs(Path::new(crate::paths::BPFFS)) {
            return Err(crate::host::no_bpffs());
        }
        fs::create_dir_all(layout.maps_dir()).map_err(|cause| Error::Pin {
            what: "creating",
            path: layout.maps_dir(),
            cause,
        })?;
        // From here on, a failure removes what was pinned.
        let pinned = Pinned {
            layout,
            links: Vec::new(),
            keep: false,
        };
        for name in ALL_MAPS {
            let path = pinned.layout.map(name);
            dataplane
                .map(name)?
                .pin(&path)
                .map_err(pin_err("pinning map", &path))?;
        }
        let path = pinned.layout.program();
        dataplane
            .program()
            .pin(&path)
            .map_err(pin_err("pinning program", &path))?;
        let path = pinned.layout.clock_program();
        let clock: &mut Xdp = dataplane
            .ebpf
            .program_mut(lb_common::PROGRAM_CLOCK)
            .expect("loaded")
            .try_into()?;
        clock
            .pin(&path)
            .map_err(pin_err("pinning program", &path))?;
        Ok(pinned)
    }

    /// Takes over the pins an earlier run left (see [`super::adopt`]); `dataplane` was
    /// loaded on their maps, in the XDP mode they were attached in (see
    /// [`super::adopt::mode_changed`]). The new programs replace the pinned ones; each
    /// configured interface's link (found by device, so renamed interfaces keep theirs) is
    /// switched to the new program in one step (`bpf_link_update`), so it never stops
    /// forwarding. An interface without a link (new, or recreated) is attached; links of
    /// interfaces no longer configured are removed (detached).
    pub fn adopt(
        dataplane: &mut Dataplane,
        layout: PinLayout,
        found: &super::adopt::Adoptable,
        interfaces: &[InterfaceInfo],
        mode: XdpModeSetting,
    ) -> Result<Pinned> {
        debug_assert_eq!(found.info.xdp_mode, super::adopt::mode_value(mode));
        for (path, name) in [
            (layout.program(), lb_common::PROGRAM_LB),
            (layout.clock_program(), lb_common::PROGRAM_CLOCK),
        ] {
            match fs::remove_file(&path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::Pin {
                        what: "replacing program",
                        path,
                        cause: err,
                    });
                }
                _ => {}
            }
            let program: &mut Xdp = dataplane
                .ebpf
                .program_mut(name)
                .expect("loaded")
                .try_into()?;
            program
                .pin(&path)
                .map_err(pin_err("pinning program", &path))?;
        }
        // Where each held link is attached now (0: its interface is gone).
        let held: Vec<(String, u32)> = found
            .links
            .iter()
            .map(|name| {
                let ifindex = super::adopt::link_ifindex(&layout.link(name)).unwrap_or(0);
                (name.clone(), ifindex)
            })
            .collect();
        // The link on each configured interface's device, whatever name it was pinned under
        // (interfaces may have been renamed, even swapped). All are opened first: holding
        // their descriptors, their old pins can go before the new ones are made without any
        // link losing its last reference.
        let mut sources: Vec<Option<(String, FdLink)>> = Vec::new();
        for iface in interfaces {
            let source = match held
                .iter()
                .find(|(_, ifindex)| *ifindex != 0 && *ifindex == iface.ifindex)
            {
                Some((name, _)) => {
                    let from = layout.link(name);
                    let link =
                        PinnedLink::from_pin(&from).map_err(|e| link_err(&from, e.to_string()))?;
                    Some((name.clone(), FdLink::from(link)))
                }
                None => None,
            };
            sources.push(source);
        }
        // Pins that will not name the same link under the same name any more go now: renamed
        // links (held open above), and links of interfaces no longer configured or gone
        // (detached by this).
        for (name, _) in &held {
            let kept = interfaces.iter().zip(&sources).any(|(iface, source)| {
                source
                    .as_ref()
                    .is_some_and(|(from, _)| from == name && iface.name == *name)
            });
            if !kept {
                let configured = interfaces.iter().any(|i| i.name == *name);
                if !configured && !sources.iter().flatten().any(|(from, _)| from == name) {
                    tracing::info!(interface = %name, "detaching from an interface no longer configured");
                }
                let _ = fs::remove_file(layout.link(name));
            }
        }
        let mut links = Vec::new();
        for (iface, source) in interfaces.iter().zip(sources) {
            let path = layout.link(&iface.name);
            match source {
                Some((from, fd_link)) => {
                    let link = aya::programs::xdp::XdpLink::try_from(fd_link)
                        .map_err(|e| link_err(&path, e.to_string()))?;
                    let program = dataplane.program();
                    let id = program
                        .attach_to_link(link)
                        .map_err(|e| link_err(&path, format!("bpf_link_update: {e}")))?;
                    let link = program.take_link(id)?;
                    if from != iface.name {
                        FdLink::try_from(link)
                            .map_err(|e| link_err(&path, e.to_string()))?
                            .pin(&path)
                            .map_err(pin_err("pinning link", &path))?;
                        tracing::info!(interface = %iface.name, was = %from, "switched the attached link of a renamed interface to the new program");
                    } else {
                        // The pin holds the link; this descriptor is not needed.
                        drop(link);
                        tracing::info!(interface = %iface.name, "switched the attached link to the new program");
                    }
                }
                None => {
                    // A new interface, or one recreated since (its old link went with it).
                    let mut fresh = Pinned {
                        layout: layout.clone(),
                        links: Vec::new(),
                        keep: true,
                    };
                    fresh.attach(dataplane, iface, mode)?;
                    tracing::info!(interface = %iface.name, "attached");
                }
            }
            links.push((
                iface.name.clone(),
                PinnedLink::from_pin(&path).map_err(|e| link_err(&path, e.to_string()))?,
            ));
        }
        write_pin_info(dataplane, mode)?;
        // Kept until the daemon serves (see [`Pinned::own`]): a start that fails after
        // this leaves the datapath it took over forwarding, for the next start to adopt.
        Ok(Pinned {
            layout,
            links,
            keep: true,
        })
    }

    /// Makes dropping this detach and unpin everything again (a full stop), once the
    /// daemon that adopted the pins serves.
    pub fn own(&mut self) {
        self.keep = false;
    }

    /// Leaves the maps pinned and the links attached when dropped: the datapath goes on
    /// forwarding with the last applied state until the next `lbd run` adopts it.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Attaches the program to `iface` and pins the link, so the attachment outlives this
    /// process only if it dies without cleaning up (a later version adopts it).
    pub fn attach(
        &mut self,
        dataplane: &mut Dataplane,
        iface: &InterfaceInfo,
        mode: XdpModeSetting,
    ) -> Result<()> {
        let (xdp_mode, mode_name) = match mode {
            XdpModeSetting::Native => (XdpMode::Driver, "native"),
            XdpModeSetting::Skb => (XdpMode::Skb, "skb"),
        };
        let program = dataplane.program();
        let link_id = program
            .attach_to_if_index(iface.ifindex, xdp_mode)
            .map_err(|cause| attach_error(iface, mode, mode_name, cause))?;
        let link = program.take_link(link_id)?;
        let fd_link = FdLink::try_from(link).map_err(|e| Error::Pin {
            what: "converting XDP link",
            path: self.layout.link(&iface.name),
            cause: io::Error::other(e.to_string()),
        })?;
        let path = self.layout.link(&iface.name);
        let pinned = fd_link.pin(&path).map_err(pin_err("pinning link", &path))?;
        self.links.push((iface.name.clone(), pinned));
        Ok(())
    }
}

/// Records the layout version and XDP mode in `PIN_INFO`, for the next `lbd run`.
pub fn write_pin_info(dataplane: &mut Dataplane, mode: XdpModeSetting) -> Result<()> {
    let name = lb_common::MAP_PIN_INFO;
    let map = dataplane
        .ebpf
        .map_mut(name)
        .ok_or_else(|| Error::map(name, aya::maps::MapError::InvalidName { name: name.into() }))?;
    let mut array: aya::maps::Array<&mut MapData, lb_common::PinInfo> =
        aya::maps::Array::try_from(map).map_err(|e| Error::map(name, e))?;
    array
        .set(
            0,
            lb_common::PinInfo {
                layout: lb_common::LAYOUT_VERSION,
                xdp_mode: super::adopt::mode_value(mode),
            },
            0,
        )
        .map_err(|e| Error::map(name, e))
}

fn link_err(path: &Path, message: String) -> Error {
    Error::Pin {
        what: "taking over link",
        path: path.to_owned(),
        cause: io::Error::other(message),
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for (iface, link) in self.links.drain(..) {
            // Unpinned and dropped, the link's last reference goes and the program detaches.
            if let Err(err) = link.unpin() {
                tracing::error!(interface = %iface, cause = %err, "unpinning XDP link");
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.layout.dir) {
            tracing::error!(dir = %self.layout.dir.display(), cause = %err, "removing pins");
        }
    }
}

/// Says why attaching failed and what to do: a busy interface (and by whom, when it is
/// another lbd instance), or a driver without native XDP.
fn attach_error(
    iface: &InterfaceInfo,
    mode: XdpModeSetting,
    mode_name: &'static str,
    cause: aya::programs::ProgramError,
) -> Error {
    let errno = crate::error::os_error(&cause);
    if matches!(errno, Some(libc::EBUSY) | Some(libc::EEXIST)) {
        let holder = lbd_holding(&iface.name).unwrap_or_default();
        return Error::InterfaceBusy {
            interface: iface.name.clone(),
            holder,
        };
    }
    let denied = matches!(errno, Some(libc::EPERM) | Some(libc::EACCES));
    let hint = if mode == XdpModeSetting::Native && !denied {
        "; if this driver has no native XDP, set xdp_mode = \"skb\" (or run with --xdp-mode skb)"
            .to_owned()
    } else {
        String::new()
    };
    Error::Attach {
        interface: iface.name.clone(),
        mode: mode_name,
        cause: Box::new(cause),
        hint,
    }
}

/// Which lbd instance holds an interface of this name in this network namespace, as a
/// clause for the busy error. Pins live in the host's bpffs, shared by every namespace, and
/// names like `eth0` repeat across namespaces: an instance is named only when its daemon
/// runs in this namespace, or (daemon dead, namespace unknown) as a possibility.
fn lbd_holding(interface: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let netns = |path: &str| fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let here = netns("/proc/self/ns/net")?;
    fs::read_dir(crate::paths::PIN_ROOT)
        .ok()?
        .filter_map(|entry| entry.ok())
        .find_map(|entry| {
            let link = entry.path().join(format!("link_{interface}"));
            if !link.exists() {
                return None;
            }
            let instance = entry.file_name().to_string_lossy().into_owned();
            match crate::instance::liveness(&instance) {
                crate::instance::Liveness::Running { pid, .. } => {
                    (netns(&format!("/proc/{pid}/ns/net")) == Some(here)).then(|| {
                        format!(
                            ", by lbd instance {instance:?} (link pinned at {})",
                            link.display()
                        )
                    })
                }
                _ => Some(format!(
                    ", possibly by lbd instance {instance:?}, whose daemon is not running \
                     (link pinned at {}; `lbd status --instance {instance}` tells more)",
                    link.display()
                )),
            }
        })
}

/// Removes the pins a crashed instance left (detaching its program).
pub fn remove_stale(layout: &PinLayout) -> io::Result<()> {
    match fs::remove_dir_all(&layout.dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Maps (and the clock program) of a running instance, opened from its pins.
pub struct PinnedMaps {
    maps: BTreeMap<&'static str, Map>,
    clock: Xdp,
}

impl PinnedMaps {
    pub fn open(layout: &PinLayout, instance: &str) -> Result<PinnedMaps> {
        if !layout.maps_dir().is_dir() {
            return Err(Error::NotRunning {
                instance: instance.to_owned(),
                pin_dir: layout.dir.clone(),
            });
        }
        let mut maps = BTreeMap::new();
        for name in ALL_MAPS {
            let path = layout.map(name);
            let data =
                MapData::from_pin(&path).map_err(|cause| match crate::error::os_error(&cause) {
                    Some(libc::EPERM) | Some(libc::EACCES) => Error::NeedsPrivilege {
                        what: "reading an instance's maps",
                        detail: format!("opening {} was refused", path.display()),
                    },
                    _ => Error::map(name, cause),
                })?;
            maps.insert(
                name,
                Map::from_map_data(data).map_err(|cause| Error::map(name, cause))?,
            );
        }
        let clock = Xdp::from_pin(
            layout.clock_program(),
            aya_obj::programs::XdpAttachType::Interface,
        )?;
        Ok(PinnedMaps { maps, clock })
    }
}

impl MapSource for PinnedMaps {
    fn now_jiffies(&self) -> Result<u64> {
        super::clock::now(&self.clock)
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.maps
            .get(name)
            .ok_or_else(|| Error::map(name, aya::maps::MapError::InvalidName { name: name.into() }))
    }
}

/// The pinned balancer program of a running instance (benchmarks run it through
/// BPF_PROG_TEST_RUN to drive the live maps).
pub fn pinned_program(layout: &PinLayout) -> Result<Xdp> {
    Ok(Xdp::from_pin(
        layout.program(),
        aya_obj::programs::XdpAttachType::Interface,
    )?)
}
