//! `[metrics]`: where the Prometheus endpoint listens.

use std::net::SocketAddr;

use super::walk::{Problems, Table};

/// The default endpoint: loopback only (metrics name every backend; expose them on purpose).
pub const METRICS_LISTEN: &str = "127.0.0.1:9917";

/// Where `/metrics` is served; `None` when `[metrics] enabled = false`.
pub fn metrics(root: &Table<'_>, p: &mut Problems) -> Option<SocketAddr> {
    let default: SocketAddr = METRICS_LISTEN.parse().expect("a socket address");
    let Some(t) = root.table("metrics", "metrics", p) else {
        return Some(default);
    };
    t.only(&["enabled", "listen"], p);
    let enabled = t.boolean("enabled", p).is_none_or(|e| e.value);
    let listen = match t.string("listen", p) {
        None => default,
        Some(text) => match text.value.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => addr,
            _ => {
                p.add(
                    Some(text.at),
                    text.key,
                    format!(
                        "{:?} is not an address and port such as \"127.0.0.1:9917\" or \"[::1]:9917\"",
                        text.value
                    ),
                );
                default
            }
        },
    };
    enabled.then_some(listen)
}
