//! Taking over what an earlier `lbd run` of the instance left in bpffs (after a crash, or a
//! stop that kept the datapath for an upgrade): its maps, with the tracked connections and
//! counters, and its links, whose program is swapped for the new one without detaching.
//!
//! Pins are adopted only when [`lb_common::PIN_INFO`](lb_common::MAP_PIN_INFO) says they
//! have this lbd's [`LAYOUT_VERSION`] and every pinned map has the shape this object
//! declares. Otherwise the old program is left forwarding, untouched, and `lbd run` says
//! why: an empty connection table under live traffic is never the silent outcome.

use std::{fs, io, os::fd::AsRawFd, path::Path};

use aya::maps::{Array, MapData, MapInfo};
use lb_common::{
    ALL_MAPS, LAYOUT_VERSION, MAP_FLOWS, MAP_FLOWS6, MAP_PIN_INFO, PinInfo, XDP_MODE_NATIVE,
    XDP_MODE_SKB,
};

use crate::{
    config::XdpModeSetting,
    error::{Error, Result},
    paths::PinLayout,
};

/// What an instance's pin directory holds, as far as adoption is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No directory, or nothing attached through it: start afresh (stale pins are removed).
    Nothing,
    /// Attached links and maps this lbd can take over.
    Adoptable(Adoptable),
}

/// Pins this lbd can take over.
#[derive(Debug, PartialEq, Eq)]
pub struct Adoptable {
    pub info: PinInfo,
    /// Interfaces with a pinned link (`link_<name>`).
    pub links: Vec<String>,
    /// Connection tables whose capacity differs from the configured `max_flows`: `(map,
    /// pinned capacity)`. They are kept as they are (a map cannot be resized in place).
    pub resized: Vec<(&'static str, u32)>,
}

/// A pinned map's shape: type, key size, value size, capacity.
pub type Shape = (u32, u32, u32, u32);

/// Looks at the pins an earlier run left and decides whether they can be adopted by a
/// datapath built from `object` with `max_flows`.
pub fn inspect(layout: &PinLayout, object: &[u8], max_flows: u32) -> Result<Found> {
    let links = pinned_links(layout);
    if links.is_empty() {
        return Ok(Found::Nothing);
    }
    let declared = declared_shapes(object)?;
    let info = read_pin_info(layout).ok();
    let mut pinned = Vec::new();
    for name in ALL_MAPS {
        let path = layout.map(name);
        if !path.exists() {
            continue; // new in this version: created empty and pinned at load
        }
        let info = MapInfo::from_pin(&path).map_err(|cause| Error::map(name, cause))?;
        let map_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        pinned.push((
            name,
            (
                map_type,
                info.key_size(),
                info.value_size(),
                info.max_entries(),
            ),
        ));
    }
    decide(layout, info, &declared, &pinned, max_flows, links)
}

/// The adoption decision, apart from bpffs: `info` as read from `PIN_INFO` (`None`: no
/// such map, an lbd from before layouts were versioned), `declared` the shapes the new
/// object declares, `pinned` the shapes found.
pub fn decide(
    layout: &PinLayout,
    info: Option<PinInfo>,
    declared: &[(&'static str, Shape)],
    pinned: &[(&'static str, Shape)],
    max_flows: u32,
    links: Vec<String>,
) -> Result<Found> {
    let refuse = |why: String| Error::LayoutChanged {
        pin_dir: layout.dir.clone(),
        why,
    };
    let info = info.ok_or_else(|| {
        refuse(format!(
            "they carry no layout version ({MAP_PIN_INFO} is missing); this lbd has layout {LAYOUT_VERSION}"
        ))
    })?;
    if info.layout != LAYOUT_VERSION {
        return Err(refuse(format!(
            "their maps have layout {}, this lbd has layout {LAYOUT_VERSION}",
            info.layout
        )));
    }
    let mut resized = Vec::new();
    for &(name, found) in pinned {
        let Some(&(_, want)) = declared.iter().find(|(n, _)| *n == name) else {
            continue; // a map this version no longer has: left unused, removed at full stop
        };
        let (mut want, mut found) = (want, found);
        if name == MAP_FLOWS || name == MAP_FLOWS6 {
            if found.3 != max_flows {
                resized.push((name, found.3));
            }
            (want.3, found.3) = (0, 0);
        }
        if want != found {
            return Err(refuse(format!(
                "map {name} is (type, key, value, entries) {found:?}, this lbd's is {want:?}, \
                 under the same layout {LAYOUT_VERSION}"
            )));
        }
    }
    Ok(Found::Adoptable(Adoptable {
        info,
        links,
        resized,
    }))
}

/// The shapes of the pinned maps as the object declares them (capacity before any
/// load-time override).
fn declared_shapes(object: &[u8]) -> Result<Vec<(&'static str, Shape)>> {
    let parsed = aya_obj::Object::parse(object)
        .map_err(|err| Error::Io(io::Error::other(format!("parsing the eBPF object: {err}"))))?;
    Ok(ALL_MAPS
        .iter()
        .filter_map(|&name| {
            let map = parsed.maps.get(name)?;
            Some((
                name,
                (
                    map.map_type(),
                    map.key_size(),
                    map.value_size(),
                    map.max_entries(),
                ),
            ))
        })
        .collect())
}

/// Interfaces with a pinned link in `layout`, by name.
pub fn pinned_links(layout: &PinLayout) -> Vec<String> {
    let Ok(entries) = fs::read_dir(&layout.dir) else {
        return Vec::new();
    };
    let mut links: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("link_")
                .map(str::to_owned)
        })
        .collect();
    links.sort();
    links
}

/// `PIN_INFO` of an instance's pins.
pub fn read_pin_info(layout: &PinLayout) -> Result<PinInfo> {
    let data = MapData::from_pin(layout.map(MAP_PIN_INFO))
        .map_err(|cause| Error::map(MAP_PIN_INFO, cause))?;
    let map = aya::maps::Map::Array(data);
    let array: Array<&MapData, PinInfo> =
        Array::try_from(&map).map_err(|cause| Error::map(MAP_PIN_INFO, cause))?;
    array
        .get(&0, 0)
        .map_err(|cause| Error::map(MAP_PIN_INFO, cause))
}

/// Why pins attached in another XDP mode than `mode` cannot be taken over: switching mode
/// means detaching every link first. `None` when the modes agree.
pub fn mode_changed(found: &Adoptable, mode: XdpModeSetting, layout: &PinLayout) -> Option<Error> {
    let name = |value: u32| match value {
        XDP_MODE_NATIVE => "native",
        XDP_MODE_SKB => "skb",
        _ => "unknown",
    };
    (found.info.xdp_mode != mode_value(mode)).then(|| Error::LayoutChanged {
        pin_dir: layout.dir.clone(),
        why: format!(
            "its links are attached in {} XDP mode and this run asks for {} (director.xdp_mode \
             or --xdp-mode); changing the mode detaches every interface, so it takes a full stop",
            name(found.info.xdp_mode),
            name(mode_value(mode))
        ),
    })
}

/// [`PinInfo::xdp_mode`] of a mode setting.
pub fn mode_value(mode: XdpModeSetting) -> u32 {
    match mode {
        XdpModeSetting::Native => XDP_MODE_NATIVE,
        XdpModeSetting::Skb => XDP_MODE_SKB,
    }
}

/// The interface a pinned XDP link is attached to (0 once that interface is gone).
pub fn link_ifindex(path: &Path) -> io::Result<u32> {
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        /// Explicit, so it is zero: the kernel refuses non-zero bytes past the fields.
        _pad: u32,
    }
    let mut get = GetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: the attribute points at a NUL-terminated path that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut get) }?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // `struct bpf_link_info`: type, id, prog_id, then a union aligned to 8 whose XDP member
    // is the ifindex. The kernel fills what fits and checks the rest is zero.
    let mut info = [0u32; 32];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: the attribute points at a buffer of `info_len` bytes that outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info[4])
}

/// The `bpf(2)` system call with one attribute struct.
///
/// # Safety
/// `attr` must be the attribute layout `cmd` expects, and any pointers in it valid.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: as the caller promises.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> PinLayout {
        PinLayout::for_instance("t")
    }

    const HASH: Shape = (1, 8, 16, 64);
    const LRU: Shape = (9, 40, 64, 262_144);

    fn declared() -> Vec<(&'static str, Shape)> {
        vec![("VIPS", HASH), (MAP_FLOWS, LRU)]
    }

    fn current() -> Option<PinInfo> {
        Some(PinInfo {
            layout: LAYOUT_VERSION,
            xdp_mode: XDP_MODE_NATIVE,
        })
    }

    #[test]
    fn pins_of_this_layout_and_shape_are_adopted() {
        let found = decide(
            &layout(),
            current(),
            &declared(),
            &declared(),
            262_144,
            vec!["eth0".into()],
        )
        .unwrap();
        let Found::Adoptable(adoptable) = found else {
            panic!("not adoptable")
        };
        assert_eq!(adoptable.links, ["eth0"]);
        assert!(adoptable.resized.is_empty());
    }

    #[test]
    fn another_layout_or_none_is_refused_naming_both_versions() {
        let old = Some(PinInfo {
            layout: LAYOUT_VERSION + 1,
            xdp_mode: XDP_MODE_NATIVE,
        });
        let err = decide(&layout(), old, &declared(), &declared(), 262_144, vec![])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("layout {}", LAYOUT_VERSION + 1))
                && err.contains(&format!("layout {LAYOUT_VERSION}")),
            "{err}"
        );
        assert!(err.contains("left forwarding"), "{err}");
        let err = decide(&layout(), None, &declared(), &declared(), 262_144, vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no layout version"), "{err}");
    }

    #[test]
    fn a_changed_shape_under_the_same_layout_is_refused() {
        let pinned = vec![("VIPS", (1, 8, 24, 64)), (MAP_FLOWS, LRU)];
        let err = decide(&layout(), current(), &declared(), &pinned, 262_144, vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("map VIPS"), "{err}");
    }

    /// A connection table of another capacity is kept (with its flows), and reported.
    #[test]
    fn a_flow_table_of_another_capacity_is_kept_and_reported() {
        let pinned = vec![("VIPS", HASH), (MAP_FLOWS, (9, 40, 64, 1024))];
        let Found::Adoptable(adoptable) =
            decide(&layout(), current(), &declared(), &pinned, 262_144, vec![]).unwrap()
        else {
            panic!("not adoptable")
        };
        assert_eq!(adoptable.resized, [(MAP_FLOWS, 1024)]);
    }
}
