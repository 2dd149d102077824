//! Typed writes to the datapath's maps. All map names come from `lb_common`.

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use lb_common::{
    Backend, Choice, Flow, FlowKey, FragmentVipKey, Interface, MAP_BACKEND_ACTIVE,
    MAP_BACKEND_MACS, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_FLOW_EPOCHS, MAP_FLOWS,
    MAP_FRAGMENT_VIPS, MAP_GROUP_STANDBY, MAP_INTERFACES, MAP_MAC_FILTER, MAP_PERSIST, MAP_RING,
    MAP_SETTINGS, MAP_VIP_FILTER, MAP_VIP_STATS, MAP_VIPS, MAX_INTERFACES, MacKey, PersistKey,
    RING_SIZE, Settings, TrafficCounters, VipInfo, VipKey,
};

use crate::{
    error::{Error, Result},
    reconcile::MapOp,
};

pub struct MapWriter<'a> {
    ebpf: &'a mut Ebpf,
    /// Writes left before an injected failure (tests only; see
    /// [`super::Dataplane::fail_writes_after`]).
    budget: &'a mut Option<usize>,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |cause| Error::map(name, cause)
}

impl<'a> MapWriter<'a> {
    pub(super) fn new(ebpf: &'a mut Ebpf, budget: &'a mut Option<usize>) -> Self {
        MapWriter { ebpf, budget }
    }

    /// Counts one map write against the injected-failure budget.
    fn spend(&mut self) -> Result<()> {
        match self.budget {
            Some(0) => Err(Error::Io(std::io::Error::other(
                "injected map write failure (test)",
            ))),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn data(&mut self, name: &'static str) -> Result<&mut aya::maps::Map> {
        self.spend()?;
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| Error::map(name, aya::maps::MapError::InvalidName { name: name.into() }))
    }

    fn array<V: Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>> {
        Array::try_from(self.data(name)?).map_err(map_err(name))
    }

    fn hash<K: Pod, V: Pod>(&mut self, name: &'static str) -> Result<HashMap<&mut MapData, K, V>> {
        HashMap::try_from(self.data(name)?).map_err(map_err(name))
    }

    fn reset_per_cpu<V: Pod + Default>(&mut self, name: &'static str, index: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| Error::Io(e))?;
        let mut map: PerCpuArray<&mut MapData, V> =
            PerCpuArray::try_from(self.data(name)?).map_err(map_err(name))?;
        let zeros = PerCpuValues::try_from(vec![V::default(); cpus]).map_err(Error::Io)?;
        map.set(index, zeros, 0).map_err(map_err(name))
    }

    /// Timeouts and the forwarding switch.
    pub fn set_settings(&mut self, settings: Settings) -> Result<()> {
        self.array(MAP_SETTINGS)?
            .set(0, settings, 0)
            .map_err(map_err(MAP_SETTINGS))
    }

    /// Passes (`standby`) or forwards the VIPs of a forwarding group (a VRRP instance).
    pub fn set_group_standby(&mut self, group: u32, standby: bool) -> Result<()> {
        self.array::<u32>(MAP_GROUP_STANDBY)?
            .set(group, u32::from(standby), 0)
            .map_err(map_err(MAP_GROUP_STANDBY))
    }

    /// Declares one of the director's interfaces (frames to `mac` on `ifindex` are balanced).
    /// Two interfaces sharing a slot (`ifindex % MAX_INTERFACES`) are refused.
    pub fn set_interface(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let slot = ifindex % MAX_INTERFACES;
        let mut map = self.array::<Interface>(MAP_INTERFACES)?;
        let current = map.get(&slot, 0).map_err(map_err(MAP_INTERFACES))?;
        if current.ifindex != 0 && current.ifindex != ifindex {
            return Err(Error::Io(std::io::Error::other(format!(
                "interfaces with ifindex {} and {ifindex} share slot {slot} of {MAP_INTERFACES}",
                current.ifindex
            ))));
        }
        map.set(
            slot,
            Interface {
                mac,
                _pad: [0; 2],
                ifindex,
            },
            0,
        )
        .map_err(map_err(MAP_INTERFACES))
    }

    /// Makes `interfaces` (ifindex, MAC) the director's interfaces: each is written, then
    /// any other slot still set (an adopted datapath's interface that is gone or no longer
    /// configured) is cleared. Two of them sharing a slot are refused before any write.
    pub fn set_interfaces(&mut self, interfaces: &[(u32, [u8; 6])]) -> Result<()> {
        let mut slots = std::collections::BTreeMap::new();
        for &(ifindex, mac) in interfaces {
            let slot = ifindex % MAX_INTERFACES;
            if let Some((other, _)) = slots.insert(slot, (ifindex, mac)) {
                return Err(Error::Io(std::io::Error::other(format!(
                    "interfaces with ifindex {other} and {ifindex} share slot {slot} of {MAP_INTERFACES}"
                ))));
            }
        }
        let mut map = self.array::<Interface>(MAP_INTERFACES)?;
        for (&slot, &(ifindex, mac)) in &slots {
            let entry = Interface {
                mac,
                _pad: [0; 2],
                ifindex,
            };
            map.set(slot, entry, 0).map_err(map_err(MAP_INTERFACES))?;
        }
        for slot in 0..MAX_INTERFACES {
            if slots.contains_key(&slot) {
                continue;
            }
            let current = map.get(&slot, 0).map_err(map_err(MAP_INTERFACES))?;
            if current.ifindex != 0 {
                map.set(slot, Interface::default(), 0)
                    .map_err(map_err(MAP_INTERFACES))?;
            }
        }
        Ok(())
    }

    /// Drops a tracked flow, as LRU eviction would; its next packet is scheduled afresh.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<()> {
        self.hash::<FlowKey, Flow>(MAP_FLOWS)?
            .remove(key)
            .map_err(map_err(MAP_FLOWS))
    }

    /// Installs a flow learned from another director (flow sync). Every CPU's cached copy
    /// of its flow-cache slot stops being trusted: the slot's epoch moves on. (Not atomic
    /// with the datapath's own bumps; it matters only while both directors forward.)
    pub fn install_flow(&mut self, key: &FlowKey, flow: &Flow) -> Result<()> {
        self.hash::<FlowKey, Flow>(MAP_FLOWS)?
            .insert(key, flow, 0)
            .map_err(map_err(MAP_FLOWS))?;
        let slot = (lb_common::hash::flow_hash(key) as u32) & (lb_common::FLOW_CACHE_SIZE - 1);
        let mut epochs = self.array::<u64>(MAP_FLOW_EPOCHS)?;
        let epoch = epochs.get(&slot, 0).map_err(map_err(MAP_FLOW_EPOCHS))?;
        epochs
            .set(slot, epoch.wrapping_add(1), 0)
            .map_err(map_err(MAP_FLOW_EPOCHS))
    }

    /// The tracked flow of `key`, if any (expired ones included).
    pub fn flow(&mut self, key: &FlowKey) -> Result<Option<Flow>> {
        match self.hash::<FlowKey, Flow>(MAP_FLOWS)?.get(key, 0) {
            Ok(flow) => Ok(Some(flow)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(err) => Err(Error::map(MAP_FLOWS, err)),
        }
    }

    /// Adds `delta` to a backend's open-flow count (`BACKEND_ACTIVE`). Not atomic with the
    /// datapath's own adds: it is meant for a director that does not forward (flow sync).
    pub fn add_active(&mut self, backend_id: u32, delta: i64) -> Result<()> {
        let mut counts = self.array::<u64>(MAP_BACKEND_ACTIVE)?;
        let count = counts
            .get(&backend_id, 0)
            .map_err(map_err(MAP_BACKEND_ACTIVE))?;
        counts
            .set(backend_id, count.wrapping_add_signed(delta), 0)
            .map_err(map_err(MAP_BACKEND_ACTIVE))
    }

    /// Sets a client's persistence template (`PERSIST`).
    pub fn set_template(&mut self, key: &PersistKey, choice: &Choice) -> Result<()> {
        self.hash::<PersistKey, Choice>(MAP_PERSIST)?
            .insert(key, choice, 0)
            .map_err(map_err(MAP_PERSIST))
    }

    /// Applies reconcile ops in order.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<()> {
        for op in ops {
            match op {
                MapOp::ResetVipStats { vip_id } => {
                    self.reset_per_cpu::<TrafficCounters>(MAP_VIP_STATS, *vip_id)?
                }
                MapOp::ResetBackendStats { backend_id } => {
                    self.reset_per_cpu::<TrafficCounters>(MAP_BACKEND_STATS, *backend_id)?;
                    // A new allocation of the id starts with no open flows.
                    self.array::<u64>(MAP_BACKEND_ACTIVE)?
                        .set(*backend_id, 0, 0)
                        .map_err(map_err(MAP_BACKEND_ACTIVE))?
                }
                MapOp::SetBackend {
                    backend_id,
                    backend,
                } => self
                    .array::<Backend>(MAP_BACKENDS)?
                    .set(*backend_id, backend, 0)
                    .map_err(map_err(MAP_BACKENDS))?,
                MapOp::RetireBackend {
                    backend_id,
                    generation,
                } => self
                    .array::<Backend>(MAP_BACKENDS)?
                    .set(
                        *backend_id,
                        Backend {
                            generation: *generation,
                            ..Backend::default()
                        },
                        0,
                    )
                    .map_err(map_err(MAP_BACKENDS))?,
                MapOp::WriteRing { vip_id, slots } => {
                    let base = vip_id * RING_SIZE;
                    for &(slot, backend_id) in slots {
                        self.array::<u32>(MAP_RING)?
                            .set(base + slot, backend_id, 0)
                            .map_err(map_err(MAP_RING))?;
                    }
                }
                MapOp::SetBackendMac { mac, vips } => {
                    let key = MacKey {
                        mac: *mac,
                        _pad: [0; 2],
                    };
                    let mut map = self.hash::<MacKey, u64>(MAP_BACKEND_MACS)?;
                    if *vips == 0 {
                        // Idempotent: an entry already gone is what this op wants (the
                        // kernel says ENOENT, as for `RemoveVip`).
                        match map.remove(&key) {
                            Err(aya::maps::MapError::SyscallError(err))
                                if err.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => {}
                            Err(err) => return Err(Error::map(MAP_BACKEND_MACS, err)),
                        }
                    } else {
                        map.insert(key, vips, 0)
                            .map_err(map_err(MAP_BACKEND_MACS))?;
                    }
                }
                MapOp::SetFragmentVip { key, info } => {
                    let mut map = self.hash::<FragmentVipKey, VipInfo>(MAP_FRAGMENT_VIPS)?;
                    match info {
                        Some(info) => map
                            .insert(key, info, 0)
                            .map_err(map_err(MAP_FRAGMENT_VIPS))?,
                        None => match map.remove(key) {
                            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => {}
                            Err(aya::maps::MapError::SyscallError(err))
                                if err.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                            Err(err) => return Err(Error::map(MAP_FRAGMENT_VIPS, err)),
                        },
                    }
                }
                MapOp::SetVip { key, info } => self
                    .hash::<VipKey, VipInfo>(MAP_VIPS)?
                    .insert(key, info, 0)
                    .map_err(map_err(MAP_VIPS))?,
                MapOp::SetMacFilter { slot, macs } => self
                    .array::<u32>(MAP_MAC_FILTER)?
                    .set(*slot, macs, 0)
                    .map_err(map_err(MAP_MAC_FILTER))?,
                MapOp::SetVipFilter { slot, vips } => self
                    .array::<u32>(MAP_VIP_FILTER)?
                    .set(*slot, vips, 0)
                    .map_err(map_err(MAP_VIP_FILTER))?,
                // Idempotent: an entry already gone is what this op wants.
                MapOp::RemoveVip { key } => {
                    match self.hash::<VipKey, VipInfo>(MAP_VIPS)?.remove(key) {
                        Err(aya::maps::MapError::SyscallError(err))
                            if err.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                        other => other.map_err(map_err(MAP_VIPS))?,
                    }
                }
            }
        }
        Ok(())
    }
}
