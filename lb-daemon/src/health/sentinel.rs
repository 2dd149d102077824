//! Redis Sentinel for a write VIP: ask for the current master, then follow `+switch-master`,
//! so the VIP moves with a Sentinel failover and no script. Like the checkers, the watcher
//! only reports; the board decides (Sentinel's answer wins over role polling).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures_util::StreamExt;
use lb_common::VipKey;
use tokio::sync::mpsc;

use super::probe::{self, redis_error};
use crate::config::SentinelConfig;

/// What Sentinel says a write VIP's master is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelReport {
    pub vip: VipKey,
    /// The watcher that sent it (see [`Changes::start_sentinels`](super::board::Changes)).
    pub watcher: u64,
    /// `None`: no Sentinel answered (or none knows the name); role polling decides.
    pub master: Option<SocketAddr>,
    /// Which Sentinel said so, or why none did.
    pub via: String,
}

/// `+switch-master` payload: `<name> <old-ip> <old-port> <new-ip> <new-port>`.
pub fn parse_switch(payload: &str, master_name: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = payload.split_whitespace().collect();
    match fields.as_slice() {
        [name, _, _, new_ip, new_port] if *name == master_name => Some(SocketAddr::new(
            new_ip.parse().ok()?,
            new_port.parse().ok()?,
        )),
        _ => None,
    }
}

/// Watches the Sentinels of one VIP until the task is aborted. `timeout` bounds every
/// connection and query. The master is reported when first asked, at once on
/// `+switch-master`, and when asking again (every `interval`, at least a second) finds it
/// changed. When a Sentinel stops answering, the next one is tried; when none answers, that
/// is reported and all are tried again after `interval`.
pub async fn watch(
    vip: VipKey,
    watcher: u64,
    spec: SentinelConfig,
    timeout: Duration,
    interval: Duration,
    reports: mpsc::Sender<SentinelReport>,
) {
    let mut first = 0;
    loop {
        let mut reasons = Vec::new();
        for i in 0..spec.addresses.len() {
            let addr = spec.addresses[(first + i) % spec.addresses.len()];
            // Returns when that Sentinel stops answering.
            let reason = session(
                vip,
                watcher,
                &spec,
                addr.into(),
                timeout,
                interval,
                &reports,
            )
            .await;
            reasons.push(format!("{addr}: {reason}"));
            if reports.is_closed() {
                return;
            }
        }
        first = (first + 1) % spec.addresses.len().max(1);
        let report = SentinelReport {
            vip,
            watcher,
            master: None,
            via: format!("no Sentinel answered ({})", reasons.join("; ")),
        };
        if reports.send(report).await.is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Asks `addr`, subscribes, and follows it; returns why it stopped.
async fn session(
    vip: VipKey,
    watcher: u64,
    spec: &SentinelConfig,
    addr: SocketAddr,
    timeout: Duration,
    interval: Duration,
    reports: &mpsc::Sender<SentinelReport>,
) -> String {
    let mut conn = match probe::connect(addr, spec.auth.as_ref(), timeout).await {
        Ok(conn) => conn,
        Err(reason) => return reason,
    };
    let ask =
        async |conn: &mut redis::aio::MultiplexedConnection| -> Result<SentinelReport, String> {
            let answer: Option<(String, u16)> = tokio::time::timeout(
                timeout,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&spec.master_name)
                    .query_async(conn),
            )
            .await
            .map_err(|_| "SENTINEL get-master-addr-by-name timed out".to_owned())?
            .map_err(|err| redis_error("SENTINEL get-master-addr-by-name", &err))?;
            let master = match answer {
                None => return Err(format!("does not know master {:?}", spec.master_name)),
                Some((ip, port)) => SocketAddr::new(
                    ip.parse::<IpAddr>()
                        .map_err(|_| format!("master address {ip:?} is not an IP address"))?,
                    port,
                ),
            };
            Ok(SentinelReport {
                vip,
                watcher,
                master: Some(master),
                via: format!("Sentinel {addr}"),
            })
        };
    let first = match ask(&mut conn).await {
        Ok(report) => report,
        Err(reason) => return reason,
    };
    let mut known = first.master;
    if reports.send(first).await.is_err() {
        return "stopping".to_owned();
    }

    let auth = match &spec.auth {
        Some(a) => match probe::reveal(&a.password).await {
            Ok(password) => Some((&a.user, password)),
            Err(reason) => return reason,
        },
        None => None,
    };
    let client = match probe::client(addr, auth) {
        Ok(client) => client,
        Err(reason) => return reason,
    };
    let subscribed = tokio::time::timeout(timeout, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe("+switch-master").await?;
        Ok::<_, redis::RedisError>(pubsub)
    })
    .await;
    let mut pubsub = match subscribed {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(err)) => return redis_error("SUBSCRIBE +switch-master", &err),
        Err(_) => return "SUBSCRIBE +switch-master timed out".to_owned(),
    };
    let mut messages = pubsub.on_message();
    // The message is what moves the VIP; asking again only catches what a lost connection
    // missed, so no more than once a second.
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.tick().await;
    loop {
        let report = tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return "subscription closed".to_owned();
                };
                let payload: String = message.get_payload().unwrap_or_default();
                let Some(master) = parse_switch(&payload, &spec.master_name) else {
                    continue;
                };
                SentinelReport {
                    vip,
                    watcher,
                    master: Some(master),
                    via: format!("Sentinel {addr}: +switch-master {payload}"),
                }
            }
            _ = tick.tick() => match ask(&mut conn).await {
                Ok(report) => report,
                Err(reason) => return reason,
            },
        };
        // Only changes matter (the periodic answer is usually the same), but every
        // +switch-master is passed on: it is worth a log line even when asking again found
        // the promoted replica first.
        if report.master != known || report.via.contains("+switch-master") {
            known = report.master;
            if reports.send(report).await.is_err() {
                return "stopping".to_owned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_master_messages_are_read_for_our_name_only() {
        let payload = "mymaster 198.18.0.11 6379 198.18.0.12 6379";
        assert_eq!(
            parse_switch(payload, "mymaster"),
            Some(SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 12)),
                6379
            ))
        );
        assert_eq!(parse_switch(payload, "other"), None);
        assert_eq!(parse_switch("mymaster 198.18.0.11 6379", "mymaster"), None);
    }
}
