//! `cargo xtask`: build the eBPF objects, run the daemon or the lab, test, benchmark.
//! Every task first installs what this machine lacks (see `bootstrap`).

mod bootstrap;
mod build;
mod package;
mod tasks;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (packages, rust-src, bpf-linker, bpffs). Idempotent.
    Bootstrap,
    /// Build the eBPF objects (nightly, bpfel-unknown-none, with BTF).
    BuildEbpf,
    /// With no arguments: a self-contained lab (client, director, three Redis servers in
    /// network namespaces) showing traffic balanced live. With arguments: `lbd <args>`,
    /// e.g. `cargo xtask run -- run --config /etc/lbd.toml`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test: unit, datapath fixtures (BPF_PROG_TEST_RUN), end to end in namespaces.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Datapath micro-benchmarks, the lab redis-benchmark, the health-check and the VRRP
    /// failover benchmarks; writes docs/benchmarks.md.
    Bench {
        /// Only the datapath benchmarks (replaces that section of the report).
        #[arg(long)]
        no_lab: bool,
        /// Only the health-check benchmarks (prints only; the report is not rewritten).
        #[arg(long, conflicts_with = "no_lab")]
        health_only: bool,
        /// Only the VRRP failover benchmarks (replaces that section of the report).
        #[arg(long, conflicts_with_all = ["no_lab", "health_only"])]
        vrrp_only: bool,
        /// Only the restart and upgrade benchmarks (replaces that section of the report).
        #[arg(long, conflicts_with_all = ["no_lab", "health_only", "vrrp_only"])]
        restart_only: bool,
        /// Only the flow sync cost (replaces that part of the report).
        #[arg(long, conflicts_with_all = ["no_lab", "health_only", "vrrp_only"])]
        sync_only: bool,
        /// Only the 20 ms advert soak under load, for this many seconds (600 for the
        /// issue's 10 minutes; replaces that part of the report).
        #[arg(long, value_name = "SECONDS")]
        soak: Option<u64>,
    },
    /// A Debian package (lbd with its eBPF objects, the systemd unit, an example config, the
    /// Grafana dashboard, the docs) built from a release lbd.
    Package {
        /// Where the .deb goes.
        #[arg(long, default_value = "target/package")]
        out: std::path::PathBuf,
    },
    /// The datapath fuzz test (random and mutated frames through BPF_PROG_TEST_RUN, checked
    /// against the forwarding invariant) with more frames or another seed than `test` uses.
    Fuzz {
        /// Frames to try.
        #[arg(long, default_value_t = 2_000_000)]
        frames: u64,
        /// Seed of the frame generator (the test's own by default, so a failure reproduces).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bootstrap => bootstrap::ensure_all(),
        Command::BuildEbpf => {
            build::ebpf().map(|dir| println!("eBPF objects in {}", dir.display()))
        }
        Command::Run { args } => tasks::run(&args),
        Command::Test { args } => tasks::test(&args),
        Command::Bench {
            no_lab,
            health_only,
            vrrp_only,
            sync_only,
            restart_only,
            soak,
        } => tasks::bench(
            no_lab,
            health_only,
            vrrp_only,
            sync_only,
            restart_only,
            soak,
        ),
        Command::Fuzz { frames, seed } => tasks::fuzz(frames, seed),
        Command::Package { out } => tasks::package(&out),
    }
}
