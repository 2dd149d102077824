//! Flow-state sync between directors (keepalived's `lvs_sync_daemon`, done with addresses):
//! the datapath announces new and closing flows in a ring buffer; the sender batches them
//! into UDP datagrams to every peer; the receiver takes datagrams from configured peers only
//! and hands their flows to the daemon's loop, which installs them in its connection table
//! (it is the one writer of the maps). A director that takes over then forwards every live
//! flow to the real server it already has, whatever its own ring says.
//!
//! - [`wire`]: the datagram format (pure).

pub mod install;
pub mod wire;

use std::{
    mem::size_of,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use lb_common::FlowEvent;
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::UdpSocket,
    sync::mpsc,
};
use tracing::warn;

use crate::config::SyncConfig;

/// Events sent per second at most; more are dropped (and counted): a flood of new flows
/// must not become a flood of sync traffic.
pub const MAX_EVENTS_PER_SEC: u64 = 50_000;

/// Batches of received flows waiting for the daemon's loop; more are dropped.
const QUEUE: usize = 256;

/// What sync did, for `lbd status` (flows, except `rejected`: datagrams).
#[derive(Debug, Default)]
pub struct SyncStats {
    pub sent: AtomicU64,
    /// Not sent (over the rate bound) or not installed (the daemon's queue was full).
    pub dropped: AtomicU64,
    pub received: AtomicU64,
    /// Datagrams from a non-peer, or malformed.
    pub rejected: AtomicU64,
    /// Installed in the connection table.
    pub installed: AtomicU64,
    /// To a backend this director does not have.
    pub skipped: AtomicU64,
}

impl SyncStats {
    /// One line for the state file and `lbd status`.
    pub fn line(&self) -> String {
        format!(
            "sent {} received {} installed {} skipped {} rejected {} dropped {}",
            self.sent.load(Relaxed),
            self.received.load(Relaxed),
            self.installed.load(Relaxed),
            self.skipped.load(Relaxed),
            self.rejected.load(Relaxed),
            self.dropped.load(Relaxed)
        )
    }
}

/// Starts the sender (reading `events`) and the receiver; returns the received batches.
pub async fn start(
    config: &SyncConfig,
    events: RingBuf<MapData>,
    stats: Arc<SyncStats>,
) -> std::io::Result<mpsc::Receiver<Vec<FlowEvent>>> {
    let bind = config.source.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let receiver = UdpSocket::bind(SocketAddrV4::new(bind, config.port)).await?;
    let sender = UdpSocket::bind(SocketAddrV4::new(bind, 0)).await?;
    // SAFETY: the AsyncFd owns the ring buffer, which owns its fd, for the AsyncFd's life.
    let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let peers: Vec<SocketAddr> = config
        .peers
        .iter()
        .map(|p| SocketAddr::V4(SocketAddrV4::new(*p, config.port)))
        .collect();
    tokio::spawn(send(ring, sender, peers, stats.clone()));
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(receive(receiver, config.peers.clone(), tx, stats));
    Ok(rx)
}

async fn send(
    mut ring: AsyncFd<RingBuf<MapData>>,
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    stats: Arc<SyncStats>,
) {
    let mut budget = MAX_EVENTS_PER_SEC;
    let mut refilled = Instant::now();
    let mut last_warning: Option<Instant> = None;
    let mut batch: Vec<FlowEvent> = Vec::with_capacity(wire::MAX_ENTRIES);
    loop {
        let Ok(mut guard) = ring.readable_mut().await else {
            return;
        };
        // Cleared before draining: the kernel wakes a reader only when it had caught up, so
        // a record written after the drain must find the readiness cleared, or it (and
        // every later one) would wait for ever.
        guard.clear_ready();
        let mut datagrams = Vec::new();
        {
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() < size_of::<FlowEvent>() {
                    continue;
                }
                if refilled.elapsed() >= Duration::from_secs(1) {
                    budget = MAX_EVENTS_PER_SEC;
                    refilled = Instant::now();
                }
                if budget == 0 {
                    stats.dropped.fetch_add(1, Relaxed);
                    continue;
                }
                budget -= 1;
                // SAFETY: the record holds a FlowEvent written by the datapath (length
                // checked above); read unaligned, as the ring buffer promises no alignment.
                batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
                if batch.len() == wire::MAX_ENTRIES {
                    datagrams.push(wire::encode(&batch));
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            datagrams.push(wire::encode(&batch));
            batch.clear();
        }
        for datagram in &datagrams {
            for peer in &peers {
                if let Err(err) = socket.send_to(datagram, peer).await {
                    // Logged at most once a second: a peer that is down is not news.
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        warn!(%peer, cause = %err, "sending flow sync failed");
                        last_warning = Some(Instant::now());
                    }
                }
            }
            stats
                .sent
                .fetch_add(((datagram.len() - 8) / 20) as u64, Relaxed);
        }
    }
}

async fn receive(
    socket: UdpSocket,
    peers: Vec<Ipv4Addr>,
    tx: mpsc::Sender<Vec<FlowEvent>>,
    stats: Arc<SyncStats>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let trusted = matches!(from, SocketAddr::V4(a) if peers.contains(a.ip()));
        let events = match (trusted, wire::decode(&buf[..n])) {
            (true, Ok(events)) => events,
            _ => {
                stats.rejected.fetch_add(1, Relaxed);
                continue;
            }
        };
        stats.received.fetch_add(events.len() as u64, Relaxed);
        if tx.try_send(events).is_err() {
            stats.dropped.fetch_add(1, Relaxed);
        }
    }
}
