//! One check of one backend: the I/O. Every check is bounded by its `timeout` as a whole.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Stdio,
    sync::Mutex,
    time::Duration,
};

use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{Replication, board::CheckSpec, board::Outcome, load::Load};
use crate::config::{CheckKind, RedisAuth, Role, Secret};

/// What a checker keeps between checks: its Redis connection, reused while it works (one
/// round trip per check instead of a connection, a handshake and a driver task).
#[derive(Default)]
pub struct Session {
    redis: Option<super::resp::Conn>,
}

/// Checks the backend at `addr` as `spec` says.
pub async fn check(spec: &CheckSpec, addr: IpAddr, session: &mut Session) -> Outcome {
    let timeout = spec.check.timeout;
    let work = async {
        match &spec.check.kind {
            CheckKind::Redis { auth, port } => {
                redis_check(
                    &mut session.redis,
                    SocketAddr::new(addr, port.unwrap_or(spec.port)),
                    auth.as_ref(),
                    spec.role != Role::Any,
                    spec.check.load_weights.is_some() || spec.check.max_memory_permille.is_some(),
                    spec.check.interval,
                )
                .await
            }
            CheckKind::Tcp { port } => {
                tcp_check(SocketAddr::new(addr, port.unwrap_or(spec.port))).await
            }
            CheckKind::Script {
                argv,
                dynamic_weight,
            } => script_check(argv, *dynamic_weight, spec, addr).await,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::down(format!("timed out after {}", seconds(timeout))),
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// A secret's value, read now (so a rotated file or variable is picked up). A file is read
/// on the blocking pool, at most one read per file at a time: a hung filesystem (or a FIFO)
/// costs one thread and fails the checks that need it, bounded by their timeout, and never
/// stalls the runtime that runs every other check.
pub async fn reveal(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Value(v) => Ok(v.clone()),
        Secret::File(path) => {
            static READING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
            if !READING.lock().expect("lock").insert(path.clone()) {
                return Err(format!(
                    "password_file {}: an earlier read has not returned (hung filesystem?)",
                    path.display()
                ));
            }
            let owned = path.clone();
            let read = tokio::task::spawn_blocking(move || {
                let text = std::fs::read_to_string(&owned);
                READING.lock().expect("lock").remove(&owned);
                text
            })
            .await
            .map_err(|err| format!("password_file {}: {err}", path.display()))?;
            read.map(|text| text.lines().next().unwrap_or("").to_owned())
                .map_err(|err| format!("password_file {}: {err}", path.display()))
        }
        Secret::Env(name) => {
            std::env::var(name).map_err(|_| format!("password_env {name} is not set"))
        }
    }
}

/// A script or notify command: `argv` then `extra` arguments, no shell, in a process group of
/// its own (so a timeout can kill what it started), stdio closed, and an environment of its
/// own: a standard PATH and `vars`, nothing of lbd's (which may hold a `password_env`
/// secret). Killed if dropped.
pub fn command(
    argv: &[String],
    extra: &[String],
    vars: &[(&str, String)],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .args(extra)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(vars.iter().map(|(name, value)| (*name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// One line of a Redis error, as the server said it (`LOADING Redis is loading ...`).
pub fn redis_error(what: &str, err: &redis::RedisError) -> String {
    let text = match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => err.to_string(),
    };
    format!("{what}: {}", text.lines().collect::<Vec<_>>().join(" "))
}

/// A client for `addr` with no handshake of its own (no `CLIENT SETINFO`): a check says
/// exactly what it sends. `auth`, when given, is sent by the connection setup.
pub fn client(
    addr: SocketAddr,
    auth: Option<(&Option<String>, String)>,
) -> Result<redis::Client, String> {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some((user, password)) = auth {
        if let Some(user) = user {
            settings = settings.set_username(user);
        }
        settings = settings.set_password(password);
    }
    let info = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
        .into_connection_info()
        .map_err(|err| redis_error("address", &err))?
        .set_redis_settings(settings);
    redis::Client::open(info).map_err(|err| redis_error("client", &err))
}

/// A connection to `addr`, each step bounded by `timeout`; `AUTH` sent when `auth` is set.
pub async fn connect(
    addr: SocketAddr,
    auth: Option<&RedisAuth>,
    timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let password = match auth {
        Some(a) => Some(reveal(&a.password).await?),
        None => None,
    };
    let client = client(addr, None)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|err| redis_error("connect", &err))?;
    if let (Some(auth), Some(password)) = (auth, password) {
        let mut cmd = redis::cmd("AUTH");
        if let Some(user) = &auth.user {
            cmd.arg(user);
        }
        cmd.arg(password);
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(|err| redis_error("AUTH", &err))?;
    }
    Ok(conn)
}

/// `AUTH` (when set), `PING` and the `INFO` sections needed, pipelined on the session's
/// connection (a fresh one when there is none, or when the kept one turns out broken). A
/// connection that failed at the connection level, or whose check timed out, is dropped.
async fn redis_check(
    session: &mut Option<super::resp::Conn>,
    addr: SocketAddr,
    auth: Option<&RedisAuth>,
    wants_role: bool,
    wants_load: bool,
    interval: Duration,
) -> Outcome {
    use super::resp::{Conn, ExchangeError};
    let password = match auth {
        Some(a) => match reveal(&a.password).await {
            Ok(password) => Some((&a.user, password)),
            Err(reason) => return Outcome::down(reason),
        },
        None => None,
    };
    let mut sections = Vec::new();
    if wants_role {
        sections.push("replication");
    }
    if wants_load {
        sections.extend(["clients", "stats", "memory"]);
    }
    let mut pipe = redis::pipe();
    if let Some((user, password)) = &password {
        let cmd = pipe.cmd("AUTH");
        if let Some(user) = user {
            cmd.arg(user);
        }
        cmd.arg(password);
    }
    pipe.cmd("PING");
    if !sections.is_empty() {
        // One INFO with every section needed (Redis 7 takes several).
        pipe.cmd("INFO").arg(&sections);
    }
    let count = usize::from(password.is_some()) + 1 + usize::from(!sections.is_empty());
    // A kept connection stays authenticated when the server starts asking for a password
    // (`requirepass` set while none is configured here): renewed every 20 intervals (5 s to
    // 60 s), so such a change is seen that soon; every check on a new one would cost twice
    // the CPU (one connection per backend per interval).
    let max_age = (interval * 20).clamp(Duration::from_secs(5), Duration::from_secs(60));
    if session.as_ref().is_some_and(|conn| conn.age() > max_age) {
        *session = None;
    }
    let (mut conn, mut reused) = match session.take() {
        Some(conn) => (conn, true),
        None => match Conn::open(addr).await {
            Ok(conn) => (conn, false),
            Err(err) => return Outcome::down(format!("connect: {err}")),
        },
    };
    let mut replies = loop {
        match conn.exchange(&pipe, count).await {
            Ok(replies) => break replies,
            // A kept connection the server closed since (restart, idle timeout): once more
            // on a fresh one.
            Err(ExchangeError::Io(_) | ExchangeError::Closed) if reused => {
                conn = match Conn::open(addr).await {
                    Ok(conn) => conn,
                    Err(err) => return Outcome::down(format!("connect: {err}")),
                };
                reused = false;
            }
            Err(err) => return Outcome::down(format!("PING: {err}")),
        }
    };
    // Server errors leave the connection usable.
    *session = Some(conn);
    let error = |what: &str, value: &redis::Value| match value {
        redis::Value::ServerError(err) => Some(format!(
            "{what}: {}",
            [Some(err.code()), err.details()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ")
        )),
        _ => None,
    };
    if password.is_some() {
        let auth = replies.remove(0);
        if let Some(reason) = error("AUTH", &auth) {
            return Outcome::down(reason);
        }
    }
    let text = |value: &redis::Value| -> Option<String> {
        match value {
            redis::Value::SimpleString(s) => Some(s.clone()),
            redis::Value::Okay => Some("OK".to_owned()),
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    };
    if let Some(reason) = error("PING", &replies[0]) {
        return Outcome::down(reason);
    }
    match text(&replies[0]) {
        Some(pong) if pong == "PONG" => {}
        other => return Outcome::down(format!("PING answered {other:?}, not PONG")),
    }
    if sections.is_empty() {
        return Outcome::up("PONG");
    }
    if let Some(reason) = error("INFO", &replies[1]) {
        return Outcome::down(reason);
    }
    let Some(info) = text(&replies[1]) else {
        return Outcome::down("INFO answered nothing readable");
    };
    let replication = if wants_role {
        match Replication::parse(&info) {
            Some(replication) => Some(replication),
            None => return Outcome::down("INFO replication has no role"),
        }
    } else {
        None
    };
    let load = if wants_load {
        match Load::parse(&info) {
            Some(load) => Some(load),
            None => return Outcome::down("INFO clients has no connected_clients"),
        }
    } else {
        None
    };
    let reason = match &replication {
        Some(r) => format!("PONG, role {}", r.describe()),
        None => "PONG".to_owned(),
    };
    Outcome {
        replication,
        load,
        ..Outcome::up(reason)
    }
}

async fn tcp_check(addr: SocketAddr) -> Outcome {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => Outcome::up(format!("connected to {addr}")),
        Err(err) => Outcome::down(format!("connect {addr}: {err}")),
    }
}

/// Runs the script in its own process group, so a timeout kills whatever it started too.
async fn script_check(
    argv: &[String],
    dynamic_weight: bool,
    spec: &CheckSpec,
    addr: IpAddr,
) -> Outcome {
    let mut command = command(
        argv,
        &[],
        &[
            ("LBD_BACKEND", addr.to_string()),
            ("LBD_PORT", spec.port.to_string()),
            ("LBD_VIP", spec.vip.to_string()),
        ],
    );
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return Outcome::down(format!("{}: {err}", argv[0])),
    };
    // The check's timeout drops this future while the script runs: the guard then kills
    // the whole group (the leader is not reaped yet, so its group id is still ours).
    let mut group = ProcessGroup(child.id());
    let status = match child.wait().await {
        Ok(status) => status,
        Err(err) => return Outcome::down(format!("{}: {err}", argv[0])),
    };
    // Reaped: its pid may be anyone's now. What it left running is its own business.
    group.0 = None;
    match (status.code(), dynamic_weight) {
        (Some(0), _) => Outcome::up("exit 0"),
        (Some(code @ 2..=255), true) => Outcome {
            weight: Some(code as u32 - 2),
            ..Outcome::up(format!("exit {code}: weight {}", code - 2))
        },
        (Some(code), _) => Outcome::down(format!("exit {code}")),
        (None, _) => Outcome::down(format!(
            "killed by signal {}",
            status.signal().unwrap_or_default()
        )),
    }
}

/// Kills a script's process group when the check ends, however it ends.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the group the script leads; the
            // group is ours (process_group(0) made it) and outlives its leader's zombie,
            // which tokio reaps.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod connect_port_tests {
    use std::{net::IpAddr, path::Path};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::Config;

    /// `connect_port` is accepted for a redis
    /// check (docs/configuration.md: "redis and tcp checks", "Port to check") but
    /// `CheckKind::Redis` drops it: the redis check always dials the VIP's port.
    #[tokio::test(flavor = "current_thread")]
    async fn redis_check_uses_connect_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redis_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(b"+PONG\r\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let vip_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let text = format!(
            "[director]\ninterfaces = [\"eth0\"]\n\n[[vip]]\naddress = \"198.18.0.100\"\nport = {vip_port}\n\
             [vip.check]\ntype = \"redis\"\nconnect_port = {redis_port}\ntimeout = 1\n\
             [[vip.backend]]\naddress = \"198.18.0.11\"\n"
        );
        let config = Config::parse(Path::new("t.toml"), &text).expect("connect_port accepted");
        let spec = CheckSpec::of(&config.vips[0]).unwrap();
        let outcome = check(
            &spec,
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            &mut Session::default(),
        )
        .await;
        assert!(
            outcome.ok,
            "redis check with connect_port = {redis_port} dialled the VIP port {vip_port}: {outcome:?}"
        );
    }
}
