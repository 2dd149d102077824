//! A VIP's health settings: `role`, `max_lag_secs`, `on_down` and the `[vip.check]` table.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use super::{
    CheckConfig, CheckKind, LoadMetric, Notify, OnDown, RedisAuth, Role, Secret, SentinelConfig,
    walk::{self, Problems, Table},
};

/// Keys of `[vip]` read here.
pub const VIP_KEYS: [&str; 5] = ["role", "max_lag_secs", "on_down", "check", "sentinel"];

/// A VIP's health settings as read from its table.
pub struct VipHealth {
    pub role: Role,
    pub max_lag: Option<Duration>,
    pub on_down: OnDown,
    pub check: Option<CheckConfig>,
    pub sentinel: Option<SentinelConfig>,
    /// The check table's `notify_up` / `notify_down`: every backend's, unless it has its own.
    pub notify: Notify,
}

pub fn vip_health(vip: &Table<'_>, p: &mut Problems) -> VipHealth {
    let role = match vip.string("role", p) {
        None => Role::Any,
        Some(r) => match r.value.to_ascii_lowercase().as_str() {
            "any" => Role::Any,
            "master" => Role::Master,
            "replica" | "slave" => Role::Replica,
            other => {
                p.add(
                    Some(r.at),
                    r.key,
                    format!("{other:?}: expected \"master\", \"replica\" or \"any\""),
                );
                Role::Any
            }
        },
    };
    let max_lag = vip.seconds("max_lag_secs", p).map(|lag| {
        if role != Role::Replica {
            p.add(
                Some(lag.at),
                &lag.key,
                "only means something with role = \"replica\"",
            );
        }
        lag.value
    });
    let on_down = match vip.string("on_down", p) {
        None => OnDown::Remove,
        Some(o) => match o.value.to_ascii_lowercase().as_str() {
            "remove" => OnDown::Remove,
            "drain" => OnDown::Drain,
            other => {
                p.add(
                    Some(o.at),
                    o.key,
                    format!("{other:?}: expected \"remove\" or \"drain\" (keepalived's inhibit_on_failure)"),
                );
                OnDown::Remove
            }
        },
    };
    if role == Role::Master
        && on_down == OnDown::Drain
        && let Some(read) = vip.get("on_down")
    {
        p.add(
            Some(read.at),
            read.key,
            "a write VIP (role = \"master\") must remove a demoted master: draining would \
             keep its connections writing to it while new ones write to the new master",
        );
    }
    let check_path = walk::join(vip.path, "check");
    let check_table = vip.table("check", &check_path, p);
    let notify = check_table
        .as_ref()
        .map(|table| notify(table, p))
        .unwrap_or_default();
    let check = check_table.and_then(|table| check(&table, p));
    // A check table with mistakes of its own is reported as such, not as the wrong kind.
    let check_unreadable = vip.get("check").is_some() && check.is_none();
    if role != Role::Any
        && !check_unreadable
        && !matches!(
            check.as_ref().map(|c| &c.kind),
            Some(CheckKind::Redis { .. })
        )
    {
        let at = vip.get("role").map_or(vip.at, |r| r.at);
        p.add(
            Some(at),
            walk::join(vip.path, "role"),
            format!("role = \"{role}\" needs a redis check ([vip.check] with type = \"redis\")"),
        );
    }
    let sentinel_path = walk::join(vip.path, "sentinel");
    let sentinel = vip
        .table("sentinel", &sentinel_path, p)
        .and_then(|table| sentinel(&table, p));
    if let Some(read) = vip.get("sentinel")
        && role != Role::Master
    {
        p.add(
            Some(read.at),
            read.key,
            "only for a write VIP (role = \"master\")",
        );
    }
    VipHealth {
        role,
        max_lag,
        on_down,
        check,
        sentinel,
        notify,
    }
}

fn sentinel(table: &Table<'_>, p: &mut Problems) -> Option<SentinelConfig> {
    table.only(
        &[
            "addresses",
            "master_name",
            "user",
            "password",
            "password_file",
            "password_env",
        ],
        p,
    );
    let before = p.len();
    let mut addresses = Vec::new();
    match table.get("addresses") {
        None => p.add(
            Some(table.at),
            walk::join(table.path, "addresses"),
            "missing: the Sentinels to ask, e.g. [\"198.18.0.11:26379\", \"198.18.0.12:26379\"]",
        ),
        Some(list) => {
            let elements = walk::array(&list, p).unwrap_or_default();
            if elements.is_empty() && list.item.is_array() {
                p.add(Some(list.at), &list.key, "needs at least one Sentinel");
            }
            for (i, (value, at)) in elements.into_iter().enumerate() {
                let key = format!("{}[{i}]", list.key);
                let parsed = value.as_str().and_then(|text| {
                    text.parse::<SocketAddrV4>().ok().or_else(|| {
                        text.parse::<Ipv4Addr>()
                            .ok()
                            .map(|ip| SocketAddrV4::new(ip, 26379))
                    })
                });
                match parsed {
                    Some(addr) => addresses.push(addr),
                    None => p.add(
                        Some(at),
                        key,
                        "expected \"IPv4:port\" (or an IPv4 address, port 26379)",
                    ),
                }
            }
        }
    }
    let master_name = match table.string("master_name", p) {
        Some(name) if !name.value.is_empty() => name.value,
        Some(name) => {
            p.add(Some(name.at), name.key, "must not be empty");
            String::new()
        }
        None => {
            if table.get("master_name").is_none() {
                p.add(
                    Some(table.at),
                    walk::join(table.path, "master_name"),
                    "missing: the name Sentinel monitors the master under (sentinel monitor NAME ...)",
                );
            }
            String::new()
        }
    };
    let auth = redis_auth(table, p);
    (p.len() == before).then_some(SentinelConfig {
        addresses,
        master_name,
        auth,
    })
}

fn check(table: &Table<'_>, p: &mut Problems) -> Option<CheckConfig> {
    table.only(
        &[
            "type",
            "interval",
            "timeout",
            "fall",
            "rise",
            "delay_before_retry",
            "initial",
            "connect_port",
            "user",
            "password",
            "password_file",
            "password_env",
            "script",
            "dynamic_weight",
            "notify_up",
            "notify_down",
            "load_weights",
            "max_memory_share",
        ],
        p,
    );
    let before = p.len();
    let kind_name = match table.string("type", p) {
        None if table.get("type").is_some() => return None,
        None => "redis".to_owned(),
        Some(t) => {
            let name = t.value.to_ascii_lowercase();
            if !["redis", "tcp", "script"].contains(&name.as_str()) {
                p.add(
                    Some(t.at),
                    t.key,
                    format!("{name:?}: expected \"redis\", \"tcp\" or \"script\""),
                );
                return None;
            }
            name
        }
    };
    let only_for = |p: &mut Problems, key: &str, kinds: &[&str]| {
        if let Some(read) = table.get(key)
            && !kinds.contains(&kind_name.as_str())
        {
            p.add(
                Some(read.at),
                read.key,
                format!(
                    "not used by a {kind_name} check (only by: {})",
                    kinds.join(", ")
                ),
            );
        }
    };
    for key in ["user", "password", "password_file", "password_env"] {
        only_for(p, key, &["redis"]);
    }
    only_for(p, "connect_port", &["redis", "tcp"]);
    only_for(p, "load_weights", &["redis"]);
    only_for(p, "max_memory_share", &["redis"]);
    only_for(p, "script", &["script"]);
    only_for(p, "dynamic_weight", &["script"]);

    let seconds =
        |p: &mut Problems, key: &str, default: Duration, min: Duration, max: Duration| match table
            .seconds(key, p)
        {
            None => default,
            Some(d) if (min..=max).contains(&d.value) => d.value,
            Some(d) => {
                p.add(
                    Some(d.at),
                    d.key,
                    format!(
                        "seconds, between {} and {}",
                        min.as_secs_f64(),
                        max.as_secs_f64()
                    ),
                );
                default
            }
        };
    let interval = seconds(
        p,
        "interval",
        Duration::from_secs(2),
        Duration::from_millis(10),
        Duration::from_secs(3600),
    );
    let timeout = seconds(
        p,
        "timeout",
        Duration::from_secs(1),
        Duration::from_millis(10),
        Duration::from_secs(60),
    );
    let delay_before_retry = seconds(
        p,
        "delay_before_retry",
        interval,
        Duration::from_millis(10),
        Duration::from_secs(3600),
    );
    let count = |p: &mut Problems, key: &str, default: u32| match table.integer(key, p) {
        None => default,
        Some(n) => match u32::try_from(n.value) {
            Ok(v) if (1..=100).contains(&v) => v,
            _ => {
                p.add(Some(n.at), n.key, "must be between 1 and 100");
                default
            }
        },
    };
    let fall = count(p, "fall", 3);
    let rise = count(p, "rise", 2);
    let initially_up = match table.string("initial", p) {
        None => false,
        Some(i) => match i.value.to_ascii_lowercase().as_str() {
            "down" => false,
            "up" => true,
            other => {
                p.add(
                    Some(i.at),
                    i.key,
                    format!("{other:?}: expected \"down\" (no flows before the first successful check) or \"up\""),
                );
                false
            }
        },
    };
    let load_weights =
        table
            .string("load_weights", p)
            .and_then(|m| match m.value.to_ascii_lowercase().as_str() {
                "connected_clients" | "clients" => Some(LoadMetric::ConnectedClients),
                "ops_per_sec" | "ops" => Some(LoadMetric::OpsPerSec),
                other => {
                    p.add(
                        Some(m.at),
                        m.key,
                        format!("{other:?}: expected \"connected_clients\" or \"ops_per_sec\""),
                    );
                    None
                }
            });
    let max_memory_permille = match table.get("max_memory_share") {
        None => None,
        Some(read) => {
            let share = read
                .item
                .as_float()
                .or_else(|| read.item.as_integer().map(|n| n as f64));
            match share {
                Some(x) if (0.01..=1.0).contains(&x) => Some((x * 1000.0).round() as u32),
                Some(_) => {
                    p.add(
                        Some(read.at),
                        read.key,
                        "a share of maxmemory, between 0.01 and 1",
                    );
                    None
                }
                None => {
                    walk::wrong_type(&read, "a number", p);
                    None
                }
            }
        }
    };
    let port = table
        .integer("connect_port", p)
        .and_then(|n| match u16::try_from(n.value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                p.add(Some(n.at), n.key, "must be between 1 and 65535");
                None
            }
        });
    let kind = match kind_name.as_str() {
        "redis" => CheckKind::Redis {
            auth: redis_auth(table, p),
            port,
        },
        "tcp" => CheckKind::Tcp { port },
        _ => {
            let argv = match argv(table, "script", p) {
                Some(argv) => argv,
                None => {
                    if table.get("script").is_none() {
                        p.add(
                            Some(table.at),
                            walk::join(table.path, "script"),
                            "missing: the command to run, as an array (argv, no shell): [\"/usr/local/bin/check\", \"arg\"]",
                        );
                    }
                    Vec::new()
                }
            };
            CheckKind::Script {
                argv,
                dynamic_weight: table.boolean("dynamic_weight", p).is_some_and(|b| b.value),
            }
        }
    };
    if p.len() != before {
        return None;
    }
    Some(CheckConfig {
        kind,
        interval,
        timeout,
        fall,
        rise,
        delay_before_retry,
        initially_up,
        load_weights,
        max_memory_permille,
    })
}

fn redis_auth(table: &Table<'_>, p: &mut Problems) -> Option<RedisAuth> {
    let mut sources = Vec::new();
    if let Some(v) = table.string("password", p) {
        sources.push((v.key.clone(), v.at, Secret::Value(v.value)));
    }
    if let Some(v) = table.string("password_file", p) {
        if v.value.starts_with('/') {
            sources.push((v.key.clone(), v.at, Secret::File(PathBuf::from(v.value))));
        } else {
            p.add(Some(v.at), v.key, "must be an absolute path");
        }
    }
    if let Some(v) = table.string("password_env", p) {
        sources.push((v.key.clone(), v.at, Secret::Env(v.value)));
    }
    let user = table.string("user", p);
    sources.sort_by_key(|(_, at, _)| *at);
    if sources.len() > 1 {
        let (key, at, _) = &sources[1];
        p.add(
            Some(*at),
            key.clone(),
            "give one of password, password_file and password_env",
        );
    }
    match (sources.into_iter().next(), user) {
        (Some((_, _, password)), user) => Some(RedisAuth {
            user: user.map(|u| u.value),
            password,
        }),
        (None, Some(user)) => {
            p.add(
                Some(user.at),
                user.key,
                "an ACL user needs a password (password, password_file or password_env)",
            );
            None
        }
        (None, None) => None,
    }
}

/// An argv array (`["/abs/program", "arg", ..]`, run without a shell); `None` when absent
/// or wrong (reported).
pub fn argv(table: &Table<'_>, key: &str, p: &mut Problems) -> Option<Vec<String>> {
    let list = table.get(key)?;
    let before = p.len();
    let mut argv = Vec::new();
    for (i, (value, at)) in walk::array(&list, p)?.into_iter().enumerate() {
        match value.as_str() {
            Some(arg) => argv.push(arg.to_owned()),
            None => p.add(
                Some(at),
                format!("{}[{i}]", list.key),
                format!(
                    "expected a string, found {}",
                    walk::describe_array_element(value)
                ),
            ),
        }
    }
    if argv.is_empty() {
        p.add(
            Some(list.at),
            &list.key,
            "needs at least the program to run",
        );
    } else if !argv[0].starts_with('/') {
        p.add(
            Some(list.at),
            format!("{}[0]", list.key),
            format!(
                "{:?}: give the program's absolute path (no shell, no PATH search)",
                argv[0]
            ),
        );
    }
    (p.len() == before).then_some(argv)
}

/// `notify_up` / `notify_down` of a table.
pub fn notify(table: &Table<'_>, p: &mut Problems) -> Notify {
    Notify {
        up: argv(table, "notify_up", p),
        down: argv(table, "notify_down", p),
    }
}
