//! Counter records. The kernel keeps one copy per CPU; readers sum them.

/// Traffic through one VIP or one backend (per-CPU; index = vip_id or backend_id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrafficCounters {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (whole frames).
    pub bytes: u64,
    /// Flows scheduled (conntrack misses that picked a backend).
    pub new_flows: u64,
}

impl TrafficCounters {
    /// Adds another CPU's copy.
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
    }
}

/// What the datapath did with each frame it saw (per-CPU; one slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VerdictCounters {
    /// XDP_TX: forwarded to a backend.
    pub tx: u64,
    /// XDP_TX: an ICMP error (fragmentation needed, unreachable, time exceeded) about a VIP
    /// flow, sent to the flow's backend, which sent the packet it quotes.
    pub tx_icmp_error: u64,
    /// XDP_TX: a later fragment, sent where its datagram's first fragment went.
    pub tx_fragment: u64,
    /// XDP_TX: a later fragment whose first fragment was not seen, placed by the VIP
    /// address's ring on (source, destination, protocol).
    pub tx_fragment_hashed: u64,
    /// XDP_PASS: for a VIP, but not addressed to this director's MAC (flooded by a bridge,
    /// or arriving on an interface lbd does not serve). Frames for no VIP are counted by
    /// what they carry, whatever their MAC.
    pub pass_not_for_us: u64,
    /// XDP_PASS: not TCP/UDP over IPv4 or IPv6, nor an ICMP error about a VIP flow (ARP,
    /// VRRP, pings, neighbour discovery, QinQ, unknown IPv6 extension headers, ...).
    pub pass_not_balanced: u64,
    /// XDP_PASS: TCP/UDP, but not to a configured VIP:port.
    pub pass_not_vip: u64,
    /// XDP_PASS: a later fragment to a VIP address whose first fragment was not seen, with
    /// `orphan_fragments = "pass"`.
    pub pass_fragment: u64,
    /// XDP_PASS: VIP traffic while forwarding is off (backup director).
    pub pass_not_forwarding: u64,
    /// XDP_PASS: a flow scheduled to this director itself (a local backend).
    pub pass_local: u64,
    /// XDP_PASS: a new flow from a backend of its VIP: another director balanced it here.
    pub pass_from_backend: u64,
    /// XDP_DROP: truncated or inconsistent headers.
    pub drop_malformed: u64,
    /// XDP_DROP: VIP without any usable backend.
    pub drop_no_backend: u64,
}

impl VerdictCounters {
    /// Frames seen: every frame ends in exactly one outcome, so this is their sum.
    pub fn rx(&self) -> u64 {
        self.tx
            + self.tx_icmp_error
            + self.tx_fragment
            + self.tx_fragment_hashed
            + self.pass_not_for_us
            + self.pass_not_balanced
            + self.pass_not_vip
            + self.pass_fragment
            + self.pass_not_forwarding
            + self.pass_local
            + self.pass_from_backend
            + self.drop_malformed
            + self.drop_no_backend
    }

    /// Every counter with its field name, in declaration order.
    pub fn named(&self) -> [(&'static str, u64); 13] {
        [
            ("tx", self.tx),
            ("tx_icmp_error", self.tx_icmp_error),
            ("tx_fragment", self.tx_fragment),
            ("tx_fragment_hashed", self.tx_fragment_hashed),
            ("pass_not_for_us", self.pass_not_for_us),
            ("pass_not_balanced", self.pass_not_balanced),
            ("pass_not_vip", self.pass_not_vip),
            ("pass_fragment", self.pass_fragment),
            ("pass_not_forwarding", self.pass_not_forwarding),
            ("pass_local", self.pass_local),
            ("pass_from_backend", self.pass_from_backend),
            ("drop_malformed", self.drop_malformed),
            ("drop_no_backend", self.drop_no_backend),
        ]
    }

    /// Adds another CPU's copy.
    pub fn add(&mut self, o: &Self) {
        self.tx += o.tx;
        self.tx_icmp_error += o.tx_icmp_error;
        self.tx_fragment += o.tx_fragment;
        self.tx_fragment_hashed += o.tx_fragment_hashed;
        self.pass_not_for_us += o.pass_not_for_us;
        self.pass_not_balanced += o.pass_not_balanced;
        self.pass_not_vip += o.pass_not_vip;
        self.pass_fragment += o.pass_fragment;
        self.pass_not_forwarding += o.pass_not_forwarding;
        self.pass_local += o.pass_local;
        self.pass_from_backend += o.pass_from_backend;
        self.drop_malformed += o.drop_malformed;
        self.drop_no_backend += o.drop_no_backend;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of u64 fields, no padding.
    unsafe impl aya::Pod for super::TrafficCounters {}
    unsafe impl aya::Pod for super::VerdictCounters {}
}
