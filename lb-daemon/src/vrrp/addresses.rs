//! Adding and removing VIPs on the interface (`ip addr add VIP/32 dev IF`), through
//! rtnetlink: the master holds them, so it answers ARP for them.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::{AddressMessageBuilder, Handle};

/// A netlink connection, driven on the runtime that opened it.
#[derive(Clone)]
pub struct Addresses {
    handle: Handle,
}

impl Addresses {
    /// Opens the connection and spawns its driver on the current runtime.
    pub fn open() -> std::io::Result<Addresses> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Addresses { handle })
    }

    /// Adds `address/32`; already present is fine.
    pub async fn add(&self, ifindex: u32, address: Ipv4Addr) -> Result<(), rtnetlink::Error> {
        match self
            .handle
            .address()
            .add(ifindex, IpAddr::V4(address), 32)
            .execute()
            .await
        {
            Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Removes `address/32`; already absent is fine.
    pub async fn remove(&self, ifindex: u32, address: Ipv4Addr) -> Result<(), rtnetlink::Error> {
        let message = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(ifindex)
            .address(address, 32)
            .build();
        match self.handle.address().del(message).execute().await {
            Err(err) if matches!(errno(&err), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => Ok(()),
            other => other,
        }
    }
}

/// The errno a netlink request failed with, if it was the kernel's answer.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}
