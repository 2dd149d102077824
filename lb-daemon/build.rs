//! Embeds the eBPF objects when `LB_EBPF_DIR` names where `cargo xtask build-ebpf` put them.
//! Without it the daemon still builds (plain `cargo build` needs no bpf-linker), and
//! `lbd run` explains how to build the objects.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LB_EBPF_DIR");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dir = env::var_os("LB_EBPF_DIR").map(PathBuf::from);
    for name in ["lb", "aux", "probes"] {
        let dest = out.join(format!("{name}.bpf.o"));
        match &dir {
            Some(dir) => {
                let src = dir.join(name);
                println!("cargo:rerun-if-changed={}", src.display());
                fs::copy(&src, &dest)
                    .unwrap_or_else(|e| panic!("LB_EBPF_DIR: cannot copy {}: {e}", src.display()));
            }
            None => fs::write(&dest, b"").expect("write placeholder object"),
        }
    }
}
