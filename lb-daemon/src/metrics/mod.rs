//! Prometheus `/metrics` (`[metrics] listen`, default 127.0.0.1:9917).
//!
//! - [`render`]: one scrape as OpenMetrics text (pure).
//!
//! A scrape reads the instance's pinned maps and state files on the blocking pool, as
//! `lbd status` does, so the daemon's loop never waits for one; the loop only updates the
//! few counters it alone knows ([`render::DaemonCounters`]) in a shared cell.

pub mod render;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    dataplane::{pins::PinnedMaps, snapshot},
    paths::{self, PinLayout},
};

pub use render::DaemonCounters;

/// The daemon's counters, shared with the endpoint.
pub type Shared = Arc<Mutex<DaemonCounters>>;

/// Connections served at once; more are closed at accept. Scrapers need one or two: the cap
/// keeps a misbehaving client from taking the descriptors health checks need.
const MAX_CONNECTIONS: usize = 16;

/// How long a client has to send its request and take the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` on `listen` until the runtime ends.
pub async fn serve(listen: SocketAddr, instance: String, counters: Shared) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // One scrape at a time: each walks the flow tables.
    let scraping = Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors, most likely: wait instead of spinning on it.
                    tracing::warn!(cause = %err, "/metrics: accepting failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream); // over the cap: closed at once
                continue;
            };
            let (instance, counters, scraping) =
                (instance.clone(), counters.clone(), scraping.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    CONNECTION_TIMEOUT,
                    answer(stream, instance, counters, scraping, slot),
                )
                .await;
            });
        }
    });
    Ok(())
}

/// One HTTP/1.x request: `GET /metrics` gets the scrape, anything else 404.
async fn answer(
    mut stream: tokio::net::TcpStream,
    instance: String,
    counters: Shared,
    scraping: Arc<tokio::sync::Mutex<()>>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = if method == "GET" && path == "/metrics" {
        let turn = scraping.lock_owned().await;
        let daemon = counters.lock().map(|c| c.clone()).unwrap_or_default();
        // The turn and the connection's slot go with the walk: if this connection times out,
        // the walk still counts as running until it ends.
        let walk = move || {
            let text = scrape(&instance, daemon);
            drop((turn, slot));
            text
        };
        match tokio::task::spawn_blocking(walk).await {
            Ok(Ok(text)) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Ok(Err(err)) => (
                "503 Service Unavailable",
                "text/plain",
                format!("reading the datapath: {err}\n"),
            ),
            Err(_) => ("500 Internal Server Error", "text/plain", String::new()),
        }
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads the maps and state files and renders them.
fn scrape(instance: &str, daemon: DaemonCounters) -> crate::error::Result<String> {
    let maps = PinnedMaps::open(&PinLayout::for_instance(instance), instance)?;
    let scrape = render::Scrape {
        snapshot: snapshot::read(&maps)?,
        health: crate::health::report::read(&paths::health_file(instance)).unwrap_or_default(),
        vrrp: crate::vrrp::report::read(&paths::vrrp_file(instance)).unwrap_or_default(),
        daemon,
    };
    Ok(render::render(&scrape))
}
