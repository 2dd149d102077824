//! A DR lab on one host: a client, a director and real servers running `redis-server`, each
//! in its own network namespace, joined by a bridge in a switch namespace.
//!
//! ```text
//!  client 198.18.0.1 ─┐
//!  director 198.18.0.2 (+VIP/32, answers ARP for it) ─┤ br0 (switch ns)
//!  rsN 198.18.0.1N (VIP/32 on lo, arp_ignore=1, arp_announce=2, redis-server :6379) ─┘
//! ```
//! Every lab has its own namespaces, so labs can run in parallel with the same addresses.
//! Dropping a lab stops its redis-servers and deletes its namespaces (with their links).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::programs::{Xdp, XdpMode};
use lb_common::{FlowKey, VipKey, hash::ring_slot};
use lb_daemon::{config::Config, daemon::desired_state_with, reconcile::Reconciler};

use crate::{netns::Netns, process::ChildGuard, resp, unique_name};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const DIRECTOR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The second director of a [`Lab::pair`].
pub const DIRECTOR2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// A second VIP every real server also holds (a read VIP beside a write VIP).
pub const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
pub const REDIS_PORT: u16 = 6379;
/// Key each real server answers with its own name, so a client can tell who served it.
pub const WHOAMI_KEY: &str = "lab:backend";

pub fn server_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + index as u8)
}

/// The lab's IPv6 side (2001:2::/64, RFC 5180): every host has an address there too, and the
/// director and the real servers hold an IPv6 VIP as they hold the IPv4 ones.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

/// Real server `index`'s IPv6 address: 2001:2::11, ::12, ...
pub fn server_addr6(index: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11 + index as u16)
}

pub fn vip_socket() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(VIP, REDIS_PORT))
}

/// One real server.
pub struct RealServer {
    /// `rs1`, `rs2`, ...: what it answers to `GET lab:backend`.
    pub name: String,
    pub addr: Ipv4Addr,
    /// Declared before `ns`: stopped before its namespace goes.
    pub redis: ChildGuard,
    pub ns: Netns,
}

pub struct Lab {
    /// Unique prefix of every namespace name; also the lbd instance name.
    pub prefix: String,
    /// Scratch directory (configs, logs), removed on drop.
    pub dir: PathBuf,
    pub servers: Vec<RealServer>,
    pub client: Netns,
    pub director: Netns,
    /// The second director of a [`Lab::pair`].
    pub director2: Option<Netns>,
    pub switch: Netns,
    /// XDP_PASS on each director's bridge port: veth delivers XDP_TX frames only to a peer
    /// that runs an XDP program. Real NICs need nothing like it.
    _bridge_port_xdp: Vec<aya::Ebpf>,
}

impl Lab {
    /// A lab with `servers` real servers, all running redis-server; the director holds the
    /// VIPs.
    pub fn new(tag: &str, servers: usize) -> Lab {
        Lab::build(tag, servers, false)
    }

    /// A lab with two directors (198.18.0.2 and .3) and no VIP on either: VRRP puts them
    /// on the master.
    pub fn pair(tag: &str, servers: usize) -> Lab {
        Lab::build(tag, servers, true)
    }

    fn build(tag: &str, servers: usize, pair: bool) -> Lab {
        assert!(
            std::path::Path::new("/usr/bin/redis-server").exists(),
            "redis-server is missing: `cargo xtask bootstrap` installs it"
        );
        let prefix = unique_name(tag);
        let dir = std::env::temp_dir().join(format!("lbd-lab-{prefix}"));
        std::fs::create_dir_all(&dir).expect("lab dir");
        let switch = Netns::new(&format!("{prefix}-sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);

        let host = |role: &str, addr: Ipv4Addr, addr6: Option<Ipv6Addr>| -> Netns {
            let ns = Netns::new(&format!("{prefix}-{role}"));
            plug_into_switch(&switch, &ns, role, addr);
            if let Some(addr6) = addr6 {
                // No duplicate address detection: the address is usable at once.
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{addr6}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
            }
            ns
        };
        let client = host("cl", CLIENT, Some(CLIENT6));
        // After XDP_TX a frame has lost the "checksum still to fill in" mark that veth's tx
        // offload relies on; real servers would drop such SYNs. Real NICs fill it in.
        client.exec("ethtool", &["-K", "eth0", "tx", "off"]);
        let director = host("dr", DIRECTOR, Some(DIRECTOR6));
        let mut bridge_port_xdp = vec![attach_pass(&switch, "dr")];
        let director2 = if pair {
            let director2 = host("dr2", DIRECTOR2, None);
            bridge_port_xdp.push(attach_pass(&switch, "dr2"));
            Some(director2)
        } else {
            // The director owns the VIPs: it answers ARP for them.
            for vip in [VIP, VIP2] {
                director.ip(&["addr", "add", &format!("{vip}/32"), "dev", "eth0"]);
            }
            director.ip(&[
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                "eth0",
                "nodad",
            ]);
            None
        };

        let mut real_servers = Vec::new();
        for i in 0..servers {
            let name = format!("rs{}", i + 1);
            let addr = server_addr(i);
            let ns = host(&name, addr, Some(server_addr6(i)));
            let redis = serve_redis(&ns, &dir, &name, addr);
            let server = RealServer {
                name,
                addr,
                redis,
                ns,
            };
            real_servers.push(server);
        }
        Lab {
            prefix,
            dir,
            servers: real_servers,
            client,
            director,
            director2,
            switch,
            _bridge_port_xdp: bridge_port_xdp,
        }
    }

    /// [`Lab::config`] with a Redis health check on the VIP every 0.2 s (1 s timeout).
    pub fn checked_config(&self, backends: &[(usize, u32)]) -> String {
        self.config(backends).replacen(
            "scheduler = \"maglev\"\n",
            "scheduler = \"maglev\"\n\n[vip.check]\ntype = \"redis\"\ninterval = 0.2\ntimeout = 1\n",
            1,
        )
    }

    /// A director config for this lab: `backends` lists (server index, weight).
    pub fn config(&self, backends: &[(usize, u32)]) -> String {
        let mut text = format!(
            "instance = \"{}\"\n\n[director]\ninterfaces = [\"eth0\"]\n\n[[vip]]\naddress = \"{VIP}\"\nport = {REDIS_PORT}\nprotocol = \"tcp\"\nscheduler = \"maglev\"\n",
            self.prefix
        );
        for &(i, weight) in backends {
            text.push_str(&format!(
                "\n[[vip.backend]]\naddress = \"{}\"\nweight = {weight}\n",
                server_addr(i)
            ));
        }
        text
    }
}

/// Joins `ns` to the lab's bridge: its `eth0` at `addr`/24, the switch's end named `port`.
fn plug_into_switch(switch: &Netns, ns: &Netns, port: &str, addr: Ipv4Addr) {
    crate::netns::sh(
        "ip",
        &[
            "link",
            "add",
            "eth0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &switch.name,
        ],
    );
    switch.ip(&["link", "set", port, "master", "br0", "up"]);
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
}

/// A UDP echo service on a real server, bound to a VIP (so replies leave from the VIP):
/// answers each datagram with `<server name>:` and the datagram. Stopped on drop.
pub struct UdpEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lab {
    /// Starts a [`UdpEcho`] on server `index`, at `vip:port`.
    pub fn udp_echo(&self, index: usize, vip: Ipv4Addr, port: u16) -> UdpEcho {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        let server = &self.servers[index];
        let name = server.name.clone();
        let path = format!("/run/netns/{}", server.ns.name);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                use std::os::fd::AsRawFd;
                let file = std::fs::File::open(&path).expect("netns");
                // SAFETY: setns on an open namespace fd, for this thread only.
                assert_eq!(
                    unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                let socket = std::net::UdpSocket::bind((vip, port)).expect("bind the VIP");
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let mut reply = format!("{name}:").into_bytes();
                    reply.extend_from_slice(&buf[..len]);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the echo service started");
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client in another subnet, behind a router whose link towards it has a smaller MTU:
///
/// ```text
///  far client 198.18.5.2 (MTU 1500) ── router (198.18.5.1, MTU `mtu`; 198.18.0.254 on br0)
/// ```
/// The real servers route 198.18.5.0/24 through the router, so their replies (from the
/// VIP) cross the smaller hop, and the router's "fragmentation needed" goes to the VIP.
pub struct FarClient {
    pub client: Netns,
    pub router: Netns,
}

pub const FAR_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 2);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

impl Lab {
    /// Adds a [`FarClient`] to this lab.
    pub fn far_client(&self, mtu: u32) -> FarClient {
        let router = Netns::new(&format!("{}-rt", self.prefix));
        let client = Netns::new(&format!("{}-far", self.prefix));
        plug_into_switch(&self.switch, &router, "rt", ROUTER);
        crate::netns::sh(
            "ip",
            &[
                "link",
                "add",
                "eth1",
                "netns",
                &router.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &client.name,
            ],
        );
        router.ip(&["link", "set", "eth1", "mtu", &mtu.to_string()]);
        router.ip(&["addr", "add", "198.18.5.1/24", "dev", "eth1"]);
        router.ip(&["link", "set", "eth1", "up"]);
        router.sysctl("net.ipv4.ip_forward", "1");
        client.ip(&["addr", "add", &format!("{FAR_CLIENT}/24"), "dev", "eth0"]);
        client.ip(&["link", "set", "eth0", "up"]);
        client.ip(&["route", "add", "default", "via", "198.18.5.1"]);
        // As for the lab's client: frames that reach XDP_TX must carry full checksums.
        for (ns, dev) in [(&client, "eth0"), (&router, "eth0"), (&router, "eth1")] {
            ns.exec("ethtool", &["-K", dev, "tx", "off"]);
        }
        for server in &self.servers {
            server
                .ns
                .ip(&["route", "add", "198.18.5.0/24", "via", &ROUTER.to_string()]);
        }
        FarClient { client, router }
    }
}

impl Lab {
    /// Starts server `index`'s redis-server again (after it was killed), with an empty
    /// dataset, and waits until it answers.
    pub fn restart_redis(&mut self, index: usize) {
        let server = &mut self.servers[index];
        server.redis.stop(Duration::from_secs(5));
        let child = start_redis(&server.ns, &self.dir, &server.name);
        server.redis = ChildGuard::new(server.name.clone(), child);
        let addr = server.addr;
        server.ns.run(move || {
            wait_for_redis(
                SocketAddr::V4(SocketAddrV4::new(addr, REDIS_PORT)),
                Duration::from_secs(10),
            );
        });
    }

    /// Runs one command on server `index` (from its own namespace), authenticating first
    /// when `password` is given.
    pub fn redis(&self, index: usize, password: Option<&str>, args: &[&str]) -> resp::Reply {
        let server = &self.servers[index];
        let addr = SocketAddr::V4(SocketAddrV4::new(server.addr, REDIS_PORT));
        server.ns.run(|| {
            let mut conn =
                resp::Connection::connect(addr, Duration::from_secs(5)).expect("connect");
            if let Some(password) = password {
                let ok = conn.command(&["AUTH", password]).expect("AUTH");
                assert_eq!(ok, resp::Reply::Simple("OK".into()), "AUTH on {addr}");
            }
            conn.command(args)
                .unwrap_or_else(|err| panic!("{args:?} on {addr}: {err}"))
        })
    }

    /// Sends a signal to server `index`'s redis-server (STOP, CONT, KILL).
    pub fn signal_redis(&self, index: usize, signal: libc::c_int) {
        let pid = self.servers[index].redis.pid();
        assert!(
            pid > 0,
            "redis of {} is not running",
            self.servers[index].name
        );
        // SAFETY: signals the redis-server this lab started (its guard has not reaped it).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc, 0,
            "kill({signal}) redis of {}",
            self.servers[index].name
        );
    }
}

impl Lab {
    /// Makes a director a real server too (keepalived's "localnode"): the VIPs on its `lo`
    /// with the DR ARP sysctls, and a redis-server answering `whoami` with `name`.
    pub fn serve_on_director(&self, ns: &Netns, name: &str, addr: Ipv4Addr) -> ChildGuard {
        serve_redis(ns, &self.dir, name, addr)
    }
}

/// The port Sentinels listen on.
pub const SENTINEL_PORT: u16 = 26379;

impl Lab {
    /// Starts a Sentinel on server `index` (`redis-server --sentinel`, port 26379) that
    /// monitors `master` as `name` with `quorum`, failing over after 1 s of silence.
    pub fn start_sentinel(
        &self,
        index: usize,
        name: &str,
        master: Ipv4Addr,
        quorum: u32,
        password: Option<&str>,
    ) -> ChildGuard {
        let server = &self.servers[index];
        let conf = self.dir.join(format!("sentinel-{}.conf", server.name));
        let mut text = format!(
            "port {SENTINEL_PORT}\nbind 0.0.0.0\nprotected-mode no\ndir {dir}\n\
             sentinel monitor {name} {master} {REDIS_PORT} {quorum}\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            dir = self.dir.display()
        );
        if let Some(password) = password {
            text.push_str(&format!("sentinel auth-pass {name} {password}\n"));
        }
        std::fs::write(&conf, text).expect("sentinel conf");
        let log = std::fs::File::create(self.dir.join(format!("sentinel-{}.log", server.name)))
            .expect("sentinel log");
        let child = server
            .ns
            .command("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting redis-server --sentinel");
        ChildGuard::new(format!("sentinel-{}", server.name), child)
    }
}

/// The DR real-server recipe in `ns` (the VIPs on `lo`, never answered for in ARP), then a
/// redis-server answering `whoami` with `name`; returns once it does.
fn serve_redis(ns: &Netns, dir: &std::path::Path, name: &str, addr: Ipv4Addr) -> ChildGuard {
    for vip in [VIP, VIP2] {
        ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    }
    // IPv6 needs no ARP settings: a neighbour solicitation is answered only for addresses
    // of the interface it arrives on, never for the VIP on `lo`.
    ns.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", "lo", "nodad"]);
    for conf in ["all", "lo"] {
        ns.sysctl(&format!("net.ipv4.conf.{conf}.arp_ignore"), "1");
        ns.sysctl(&format!("net.ipv4.conf.{conf}.arp_announce"), "2");
    }
    let redis = ChildGuard::new(name.to_owned(), start_redis(ns, dir, name));
    let whoami = name.to_owned();
    ns.run(move || {
        let mut conn = wait_for_redis(
            SocketAddr::V4(SocketAddrV4::new(addr, REDIS_PORT)),
            Duration::from_secs(10),
        );
        let reply = conn
            .command(&["SET", WHOAMI_KEY, &whoami])
            .expect("SET whoami");
        assert_eq!(reply, resp::Reply::Simple("OK".into()));
    });
    redis
}

/// Starts redis-server on :6379 in `ns`, logging to `<dir>/<name>.log`, no persistence.
fn start_redis(ns: &Netns, dir: &std::path::Path, name: &str) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("redis log");
    ns.command("redis-server")
        .args([
            "--port",
            &REDIS_PORT.to_string(),
            "--bind",
            "0.0.0.0",
            "::",
            "--protected-mode",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        // Each its own RDB name: replicas write theirs while syncing.
        .args(["--dbfilename", &format!("{name}.rdb")])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting redis-server")
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Loads the aux object and attaches its `pass` program to `iface` in `ns`.
pub fn attach_pass(ns: &Netns, iface: &str) -> aya::Ebpf {
    let iface = iface.to_owned();
    ns.run(move || {
        let mut ebpf = aya::Ebpf::load(lb_daemon::dataplane::object::aux().expect("aux object"))
            .expect("load aux");
        let program: &mut Xdp = ebpf
            .program_mut("pass")
            .expect("pass")
            .try_into()
            .expect("xdp");
        program.load().expect("load pass");
        program
            .attach(&iface, XdpMode::Driver)
            .expect("attach pass");
        ebpf
    })
}

/// Connects to a Redis server, retrying until it answers PING or `within` passes.
pub fn wait_for_redis(addr: SocketAddr, within: Duration) -> resp::Connection {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut conn) = resp::Connection::connect(addr, Duration::from_secs(1))
            && conn
                .command(&["PING"])
                .is_ok_and(|r| r == resp::Reply::Simple("PONG".into()))
        {
            return conn;
        }
        assert!(
            Instant::now() < deadline,
            "redis at {addr} did not answer within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to the VIP from `source_port` (0: any). Call from inside the client namespace.
pub fn connect_vip(source_port: u16, timeout: Duration) -> std::io::Result<resp::Connection> {
    connect_service(vip_socket(), source_port, timeout)
}

/// Connects to `service` (a VIP and port) from `source_port` (0: any). Call from inside the
/// client namespace.
pub fn connect_service(
    service: SocketAddr,
    source_port: u16,
    timeout: Duration,
) -> std::io::Result<resp::Connection> {
    connect_service_from(CLIENT, service, source_port, timeout)
}

/// [`connect_service`] from `source` (a client other than the lab's).
pub fn connect_service_from(
    source: Ipv4Addr,
    service: SocketAddr,
    source_port: u16,
    timeout: Duration,
) -> std::io::Result<resp::Connection> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if source_port != 0 {
        socket.bind(&SockAddr::from(SocketAddrV4::new(source, source_port)))?;
    }
    socket.connect_timeout(&SockAddr::from(service), timeout)?;
    resp::Connection::from_stream(socket.into(), timeout)
}

/// Asks a connection which real server it reached.
pub fn whoami(conn: &mut resp::Connection) -> std::io::Result<String> {
    conn.command(&["GET", WHOAMI_KEY])?
        .text()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no whoami"))
}

/// The daemon's ring for a sequence of configs, rebuilt here with the daemon's own planner
/// (MACs do not affect the ring).
pub fn planned(configs: &[&str]) -> Reconciler {
    let mut reconciler = Reconciler::default();
    for text in configs {
        let config = Config::parse(Path::new("lab.toml"), text).expect("lab config");
        let macs: BTreeMap<IpAddr, [u8; 6]> = config
            .vips
            .iter()
            .flat_map(|v| &v.backends)
            .map(|b| (b.address, [2, 0, 0, 0, 0, 1]))
            .collect();
        reconciler = reconciler
            .plan(&desired_state_with(&config, &macs).unwrap())
            .unwrap()
            .1;
    }
    reconciler
}

/// Which server the ring sends a client port to.
pub fn predicted_server(reconciler: &Reconciler, lab: &Lab, source_port: u16) -> String {
    let vip = VipKey::new(VIP.into(), REDIS_PORT, 6);
    let key = FlowKey {
        src_addr: u32::from_ne_bytes(CLIENT.octets()),
        dst_addr: u32::from_ne_bytes(VIP.octets()),
        src_port: source_port.to_be(),
        dst_port: vip.port,
        proto: 6,
        _pad0: 0,
        _pad1: 0,
    };
    let id = reconciler.ring(&vip).expect("vip")[ring_slot(&key) as usize];
    let server = lab
        .servers
        .iter()
        .find(|s| reconciler.backend_id(&vip, s.addr.into()) == Some(id))
        .expect("backend");
    server.name.clone()
}
