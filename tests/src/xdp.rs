//! Running an XDP program on one frame through BPF_PROG_TEST_RUN.

use aya::programs::{TestRun, TestRunOptions, Xdp};

/// What one BPF_PROG_TEST_RUN call returned.
pub struct RunResult {
    /// The program's verdict (XDP_PASS, XDP_TX, ...).
    pub verdict: u32,
    /// The frame as the (last) run left it.
    pub frame: Vec<u8>,
    /// Kernel-measured time per run.
    pub ns_per_run: f64,
}

/// Runs `program` on `frame` `repeat` times as if received on `ingress_ifindex` (which must
/// exist in the caller's namespace; 1 is loopback). Panics if the kernel refuses.
pub fn test_run(program: &Xdp, frame: &[u8], ingress_ifindex: u32, repeat: u32) -> RunResult {
    /// The kernel's `struct xdp_md`, as BPF_PROG_TEST_RUN takes it in `ctx_in`.
    #[repr(C)]
    struct XdpMd {
        data: u32,
        data_end: u32,
        data_meta: u32,
        ingress_ifindex: u32,
        rx_queue_index: u32,
        egress_ifindex: u32,
    }
    let ctx = XdpMd {
        data: 0,
        data_end: frame.len() as u32,
        data_meta: 0,
        ingress_ifindex,
        rx_queue_index: 0,
        egress_ifindex: 0,
    };
    // SAFETY: XdpMd is repr(C) plain data.
    let ctx = unsafe {
        std::slice::from_raw_parts((&ctx as *const XdpMd).cast::<u8>(), size_of::<XdpMd>())
    };
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(ctx),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    RunResult {
        verdict: result.return_value,
        frame: out,
        ns_per_run: result.duration.as_nanos() as f64,
    }
}
