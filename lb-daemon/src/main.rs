//! `lbd`: argument parsing and logging setup; the work is in the library.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use lb_daemon::{
    config::{Config, XdpModeSetting},
    control,
    daemon::{self, RunOptions},
    dataplane::DatapathLogLevel,
    instance::Liveness,
    paths::PinLayout,
};

/// `eprintln!` that never panics: a closed stderr (`lbd check 2>&1 | head -0`) must not turn
/// the command's exit code into a panic's 101.
macro_rules! print_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// XDP direct-routing load balancer for Redis (and any TCP/UDP service).
#[derive(Parser)]
#[command(name = "lbd", version)]
struct Cli {
    /// Enter this network namespace (`ip netns` name) before anything else. Unlike
    /// `ip netns exec`, this keeps the host's /sys/fs/bpf, so pins stay visible.
    #[arg(long, global = true)]
    netns: Option<String>,
    /// Log lines as text for people, or as one JSON object per event for log pipelines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load (or take over what an earlier run left attached), attach and serve; SIGHUP
    /// reloads the config, SIGTERM/SIGINT stop and detach, SIGUSR2 stops and leaves the
    /// datapath forwarding for the next `lbd run`.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `director.xdp_mode`.
        #[arg(long, value_enum)]
        xdp_mode: Option<ModeArg>,
        /// Datapath log events forwarded to the log (aya-log).
        #[arg(long, value_enum, default_value = "warn")]
        datapath_log: LogArg,
    },
    /// Validate a config file and exit.
    Check {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask a running instance to re-read its config, and print what it did.
    Reload {
        /// The configuration file the instance runs with (validated here first).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Stop a running instance: detach its datapath and remove its pins and files, or with
    /// --keep-datapath leave the datapath forwarding for the next `lbd run` (an upgrade).
    /// Without a daemon, removes the datapath a crashed one left.
    Stop {
        /// The instance name (default: from --config, else "lbd").
        #[arg(long, short)]
        instance: Option<String>,
        /// Take the instance name from this configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Leave the XDP program attached and its maps pinned, still forwarding (tracked
        /// connections go on), for the next `lbd run` to take over. VRRP masters hand over.
        #[arg(long)]
        keep_datapath: bool,
    },
    /// Print an lbd config (TOML, on stdout) for the LVS and VRRP parts of a keepalived.conf,
    /// following its includes; what does not map is a warning (stderr) naming its line.
    ImportKeepalived {
        /// The keepalived.conf.
        file: PathBuf,
    },
    /// On a real server (not the director): put the VIPs on `lo` and set the ARP sysctls
    /// (setup), find classic DR mistakes (check), or undo setup (teardown).
    Realserver {
        #[command(subcommand)]
        action: RealserverAction,
    },
    /// Show VIPs, backends and counters of a running instance.
    Status {
        /// The instance name (default: from --config, else "lbd").
        #[arg(long, short)]
        instance: Option<String>,
        /// Take the instance name from this configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Counters only, as `ipvsadm -L -n --stats`: connections, packets and bytes per
        /// VIP and backend, and every datapath verdict by name.
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Rates, as `ipvsadm -L -n --rate`: the counters' growth per second over
        /// `--interval`.
        #[arg(long)]
        rate: bool,
        /// Seconds `--rate` measures over, or between `--watch` refreshes (default 1).
        #[arg(long, value_parser = interval_secs)]
        interval: Option<f64>,
        /// Everything as one JSON document, for scripts.
        #[arg(long, conflicts_with_all = ["stats", "rate", "watch"])]
        json: bool,
        /// Redraw the table every --interval seconds until Ctrl-C, for people.
        #[arg(long, conflicts_with = "rate")]
        watch: bool,
    },
}

#[derive(Subcommand)]
enum RealserverAction {
    /// Add each VIP to `lo` (/32, /128) and set arp_ignore=1, arp_announce=2 (now and in
    /// /etc/sysctl.d/90-lbd-realserver.conf).
    Setup {
        /// The VIPs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        vip: Vec<std::net::IpAddr>,
        /// Where the ARP sysctls are persisted.
        #[arg(long, default_value = lb_daemon::realserver::DEFAULT_SYSCTL_FILE)]
        sysctl_file: PathBuf,
    },
    /// Report each DR mistake found with the command that fixes it; exit 1 if any.
    Check {
        /// The VIPs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        vip: Vec<std::net::IpAddr>,
        /// Also check that something listens on the VIPs' port.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Remove the VIPs from `lo`, and restore the sysctls setup changed (when no VIP is left).
    Teardown {
        /// The VIPs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        vip: Vec<std::net::IpAddr>,
        /// Where the ARP sysctls are persisted.
        #[arg(long, default_value = lb_daemon::realserver::DEFAULT_SYSCTL_FILE)]
        sysctl_file: PathBuf,
    },
}

/// `--interval`: 0.1 to 3600 seconds.
fn interval_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.1..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{text:?}: expected seconds between 0.1 and 3600")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Native,
    Skb,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogArg {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The datapath's own events arrive under the target `datapath`; `--datapath-log`
    // decides both what the program emits and what is shown.
    let datapath_level = match &cli.command {
        Command::Run { datapath_log, .. } => match datapath_log {
            LogArg::Off => "off",
            LogArg::Error => "error",
            LogArg::Warn => "warn",
            LogArg::Info => "info",
            LogArg::Debug => "debug",
        },
        _ => "warn",
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    // Colour only for a person at a terminal: a log file or journal gets plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let env_filter =
        tracing_subscriber::EnvFilter::new(format!("{filter},datapath={datapath_level}"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(env_filter)
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .init(),
        // One object per line, the event's fields at the top level beside `message`.
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(env_filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    if let Some(netns) = &cli.netns {
        // Before any thread exists, so every runtime thread inherits the namespace.
        if let Err(err) = enter_netns(netns) {
            print_err!("lbd: entering network namespace {netns}: {err}");
            return ExitCode::FAILURE;
        }
    }
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                let backends: usize = c.vips.iter().map(|v| v.backends.len()).sum();
                print_out(&format!(
                    "{}: ok ({} VIPs, {backends} backends; conntrack tables of {} flows each (IPv4, IPv6): about {} MiB of kernel memory)\n",
                    config.display(),
                    c.vips.len(),
                    c.max_flows,
                    c.conntrack_memory_bytes().div_ceil(1 << 20)
                ));
                ExitCode::SUCCESS
            }
            Err(errors) => {
                print_err!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            xdp_mode,
            datapath_log,
        } => {
            let options = RunOptions {
                config_path: config,
                xdp_mode: xdp_mode.map(|m| match m {
                    ModeArg::Native => XdpModeSetting::Native,
                    ModeArg::Skb => XdpModeSetting::Skb,
                }),
                datapath_log_level: match datapath_log {
                    LogArg::Off => DatapathLogLevel::Off,
                    LogArg::Error => DatapathLogLevel::Error,
                    LogArg::Warn => DatapathLogLevel::Warn,
                    LogArg::Info => DatapathLogLevel::Info,
                    LogArg::Debug => DatapathLogLevel::Debug,
                },
            };
            // One thread: the daemon's work is many small waits (a check per backend per
            // interval), and waking worker threads across CPUs cost more than the work.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = runtime.expect("tokio runtime").block_on(async {
                // Registered before start-up: a SIGTERM while loading or attaching is
                // acted on once start-up ends, with a clean stop, not the default action.
                let shutdown = shutdown_signal()?;
                daemon::run(options, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err @ lb_daemon::error::Error::Config(_)) => {
                    print_err!("{err}");
                    ExitCode::from(2)
                }
                Err(err) => {
                    print_err!("lbd: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { config } => {
            let parsed = match Config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    print_err!("{errors}\nlbd: not reloading: the running configuration is kept");
                    return ExitCode::from(2);
                }
            };
            match control::reload(&parsed.instance, &config, Duration::from_secs(20)) {
                Ok(msg) => {
                    print_out(&format!("reloaded instance {}: {msg}\n", parsed.instance));
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    print_err!("lbd: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ImportKeepalived { file } => import_keepalived(&file),
        Command::Realserver { action } => realserver(action),
        Command::Stop {
            instance,
            config,
            keep_datapath,
        } => {
            let instance = match instance_name(instance, config) {
                Ok(name) => name,
                Err(code) => return code,
            };
            match control::stop(&instance, keep_datapath, Duration::from_secs(30)) {
                Ok(stopped) => {
                    let pins = PinLayout::for_instance(&instance).dir;
                    let text = match stopped {
                        control::Stopped::Daemon {
                            pid,
                            keep_datapath: false,
                        } => format!(
                            "stopped instance {instance} (pid {pid}): datapath detached, pins and files removed\n"
                        ),
                        control::Stopped::Daemon {
                            pid,
                            keep_datapath: true,
                        } => format!(
                            "stopped instance {instance} (pid {pid}); its datapath goes on forwarding from {} until the next `lbd run` takes it over\n",
                            pins.display()
                        ),
                        control::Stopped::LeftoverRemoved => format!(
                            "instance {instance} had no daemon; detached the datapath it left and removed {}\n",
                            pins.display()
                        ),
                        control::Stopped::LeftoverKept => format!(
                            "instance {instance} has no daemon; its datapath goes on forwarding from {}\n",
                            pins.display()
                        ),
                        control::Stopped::Nothing => {
                            format!("instance {instance} is not running\n")
                        }
                    };
                    print_out(&text);
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    print_err!("lbd: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status {
            instance,
            config,
            stats,
            rate,
            interval,
            json,
            watch,
        } => {
            if interval.is_some() && !rate && !watch {
                print_err!("lbd: --interval goes with --rate or --watch");
                return ExitCode::from(2);
            }
            let interval = interval.unwrap_or(1.0);
            let instance = match instance_name(instance, config) {
                Ok(name) => name,
                Err(code) => return code,
            };
            let view = if json {
                control::View::Json
            } else if stats {
                control::View::Stats
            } else if rate {
                control::View::Rate(std::time::Duration::from_secs_f64(interval))
            } else {
                control::View::Table
            };
            if watch {
                return watch_status(&instance, view, Duration::from_secs_f64(interval));
            }
            match control::status(&instance, view) {
                Ok(status) => {
                    print_out(&status.table);
                    match status.daemon {
                        Liveness::Running { .. } => ExitCode::SUCCESS,
                        Liveness::Starting { pid } => {
                            let pid = pid.map_or("pid unknown".to_owned(), |p| format!("pid {p}"));
                            print_err!("lbd: instance {instance:?} is still starting ({pid})");
                            ExitCode::SUCCESS
                        }
                        Liveness::Stopped => {
                            let gone = lb_daemon::error::Error::DaemonGone {
                                pin_dir: PinLayout::for_instance(&instance).dir,
                                instance,
                            };
                            print_err!("lbd: {gone}");
                            ExitCode::from(3)
                        }
                    }
                }
                Err(err) => {
                    print_err!("lbd: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `lbd import-keepalived FILE`: the TOML on stdout, warnings on stderr; exit 2 when the file
/// cannot be converted faithfully, 1 if the result would not pass `lbd check` (a bug).
fn import_keepalived(file: &std::path::Path) -> ExitCode {
    use lb_daemon::import::keepalived;
    match keepalived::convert(file) {
        Ok(conversion) => {
            for warning in &conversion.warnings {
                print_err!("warning: {warning}");
            }
            if let Err(errors) =
                Config::parse(std::path::Path::new("(converted)"), &conversion.toml)
            {
                print_err!(
                    "lbd: the converted config does not pass lbd check (an importer bug; please report it):
{errors}
{}",
                    conversion.toml
                );
                return ExitCode::FAILURE;
            }
            print_out(&conversion.toml);
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_err!(
                "{err}\nlbd: not converted: lbd would behave differently from keepalived here"
            );
            ExitCode::from(2)
        }
    }
}

/// `lbd realserver setup|check|teardown`.
fn realserver(action: RealserverAction) -> ExitCode {
    use lb_daemon::realserver::{self, Host};
    let mut host = Host::system();
    let done = |result: Result<realserver::Outcome, String>| match result {
        Ok(outcome) => {
            let mut text = String::new();
            for action in &outcome.actions {
                text.push_str(&format!("done: {action}\n"));
            }
            for note in &outcome.notes {
                text.push_str(&format!("note: {note}\n"));
            }
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_err!("lbd: {err}");
            ExitCode::FAILURE
        }
    };
    match action {
        RealserverAction::Setup { vip, sysctl_file } => {
            host.sysctl_file = sysctl_file;
            done(realserver::setup(&host, &vip))
        }
        RealserverAction::Teardown { vip, sysctl_file } => {
            host.sysctl_file = sysctl_file;
            done(realserver::teardown(&host, &vip))
        }
        RealserverAction::Check { vip, port } => {
            let report = realserver::check(&host, &vip, port);
            let mut text = String::new();
            for ok in &report.ok {
                text.push_str(&format!("ok: {ok}\n"));
            }
            for finding in &report.problems {
                text.push_str(&format!(
                    "PROBLEM: {}\n  fix: {}\n",
                    finding.problem, finding.fix
                ));
            }
            print_out(&text);
            if report.has_problems() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// `lbd status --watch`: the view redrawn in place every `interval` until interrupted (or
/// until the instance can no longer be read).
fn watch_status(instance: &str, view: control::View, interval: Duration) -> ExitCode {
    loop {
        match control::status(instance, view) {
            Ok(status) => {
                let daemon = match status.daemon {
                    Liveness::Running { pid, .. } => format!("daemon pid {pid}"),
                    Liveness::Starting { .. } => "daemon starting".to_owned(),
                    Liveness::Stopped => "daemon NOT running: datapath left attached".to_owned(),
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                // Home and clear, then the frame: one write, so it never flickers half-drawn.
                print_out(&format!(
                    "\x1b[H\x1b[2Jlbd status --watch: instance {instance}, {daemon}, every {:.1}s (unix time {now}; Ctrl-C ends)\n\n{}",
                    interval.as_secs_f64(),
                    status.table
                ));
            }
            Err(err) => {
                print_err!("lbd: {err}");
                return ExitCode::FAILURE;
            }
        }
        std::thread::sleep(interval);
    }
}

/// The instance named on the command line: `--instance`, else `--config`'s, else "lbd".
fn instance_name(instance: Option<String>, config: Option<PathBuf>) -> Result<String, ExitCode> {
    match (instance, config) {
        (Some(i), _) => Ok(i),
        (None, Some(path)) => match Config::load(&path) {
            Ok(c) => Ok(c.instance),
            Err(errors) => {
                print_err!("{errors}");
                Err(ExitCode::from(2))
            }
        },
        (None, None) => Ok("lbd".to_owned()),
    }
}

/// Writes `text` to stdout. A reader that went away (`lbd status | head -1`) ends the
/// command quietly instead of panicking on a broken pipe.
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(err) => print_err!("lbd: writing to stdout: {err}"),
        Ok(()) => {}
    }
}

/// SIGTERM or SIGINT (a full stop) or SIGUSR2 (a stop that keeps the datapath), with every
/// handler installed now (not when first polled).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = daemon::Stop>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => daemon::Stop::Full,
            _ = int.recv() => daemon::Stop::Full,
            _ = usr2.recv() => daemon::Stop::KeepDatapath,
        }
    })
}

fn enter_netns(name: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{name}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on an open namespace file descriptor.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
