//! `INFO replication`, read and judged against a VIP's role.

use std::time::Duration;

use crate::config::Role;

/// What a Redis said about its replication role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    Master,
    Replica {
        /// `master_link_status:up`.
        link_up: bool,
        /// `master_sync_in_progress:1`.
        syncing: bool,
        /// `master_last_io_seconds_ago` (-1, unknown, while the link is down).
        last_io_secs: Option<u64>,
    },
    /// A role this checker does not know (`role:sentinel`, ...).
    Other(String),
}

impl Replication {
    /// Parses the text of `INFO replication` (CRLF-separated `key:value` lines).
    pub fn parse(info: &str) -> Option<Replication> {
        let field = |name: &str| {
            info.lines().find_map(|line| {
                let (key, value) = line.trim_end_matches('\r').split_once(':')?;
                (key == name).then(|| value.trim().to_owned())
            })
        };
        match field("role")?.as_str() {
            "master" => Some(Replication::Master),
            "slave" | "replica" => Some(Replication::Replica {
                link_up: field("master_link_status").as_deref() == Some("up"),
                syncing: field("master_sync_in_progress").as_deref() == Some("1"),
                last_io_secs: field("master_last_io_seconds_ago").and_then(|v| v.parse().ok()),
            }),
            other => Some(Replication::Other(other.to_owned())),
        }
    }

    /// Short form for status and logs: `master`, `replica`, `replica(link down)`, ...
    pub fn describe(&self) -> String {
        match self {
            Replication::Master => "master".to_owned(),
            Replication::Replica { link_up: false, .. } => "replica(link down)".to_owned(),
            Replication::Replica { syncing: true, .. } => "replica(syncing)".to_owned(),
            Replication::Replica { .. } => "replica".to_owned(),
            Replication::Other(role) => role.clone(),
        }
    }
}

/// Why a healthy backend may not take a VIP's new flows, or `None` when it may.
pub fn unfit(
    role: Role,
    replication: Option<&Replication>,
    max_lag: Option<Duration>,
) -> Option<String> {
    match (role, replication) {
        (Role::Any, _) => None,
        (_, None) => Some("role unknown (INFO replication unreadable)".to_owned()),
        (Role::Master, Some(Replication::Master)) => None,
        (Role::Master, Some(other)) => Some(format!("role is {}, not master", other.describe())),
        (
            Role::Replica,
            Some(Replication::Replica {
                link_up,
                syncing,
                last_io_secs,
            }),
        ) => {
            if !link_up {
                Some("replica with master_link_status:down".to_owned())
            } else if *syncing {
                Some("replica still syncing (master_sync_in_progress:1)".to_owned())
            } else {
                match (max_lag, last_io_secs) {
                    (Some(max), Some(lag)) if Duration::from_secs(*lag) > max => Some(format!(
                        "replica lags {lag} s (max_lag_secs {})",
                        max.as_secs_f64()
                    )),
                    _ => None,
                }
            }
        }
        (Role::Replica, Some(other)) => Some(format!("role is {}, not replica", other.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=198.18.0.12,port=6379,state=online,offset=42,lag=0\r\nmaster_failover_state:no-failover\r\n";
    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:198.18.0.11\r\nmaster_port:6379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:3\r\nmaster_sync_in_progress:0\r\n";

    #[test]
    fn reads_master_and_replica_sections() {
        assert_eq!(Replication::parse(MASTER), Some(Replication::Master));
        assert_eq!(
            Replication::parse(REPLICA),
            Some(Replication::Replica {
                link_up: true,
                syncing: false,
                last_io_secs: Some(3)
            })
        );
        let down = REPLICA
            .replace("link_status:up", "link_status:down")
            .replace("seconds_ago:3", "seconds_ago:-1");
        assert_eq!(
            Replication::parse(&down),
            Some(Replication::Replica {
                link_up: false,
                syncing: false,
                last_io_secs: None
            })
        );
        assert_eq!(Replication::parse("# Replication\r\n"), None);
    }

    #[test]
    fn a_master_vip_takes_only_masters() {
        let replica = Replication::parse(REPLICA).unwrap();
        assert_eq!(unfit(Role::Master, Some(&Replication::Master), None), None);
        assert_eq!(
            unfit(Role::Master, Some(&replica), None).as_deref(),
            Some("role is replica, not master")
        );
        assert!(unfit(Role::Master, None, None).is_some());
        assert_eq!(unfit(Role::Any, None, None), None);
    }

    #[test]
    fn a_replica_vip_takes_only_synced_replicas_within_the_lag() {
        let replica = Replication::parse(REPLICA).unwrap();
        assert_eq!(unfit(Role::Replica, Some(&replica), None), None);
        assert!(unfit(Role::Replica, Some(&Replication::Master), None).is_some());
        let syncing =
            Replication::parse(&REPLICA.replace("in_progress:0", "in_progress:1")).unwrap();
        assert!(
            unfit(Role::Replica, Some(&syncing), None)
                .unwrap()
                .contains("syncing")
        );
        let down = Replication::parse(&REPLICA.replace("status:up", "status:down")).unwrap();
        assert!(
            unfit(Role::Replica, Some(&down), None)
                .unwrap()
                .contains("down")
        );
        assert_eq!(
            unfit(Role::Replica, Some(&replica), Some(Duration::from_secs(3))),
            None
        );
        assert!(
            unfit(Role::Replica, Some(&replica), Some(Duration::from_secs(2)))
                .unwrap()
                .contains("lags 3 s")
        );
    }
}
