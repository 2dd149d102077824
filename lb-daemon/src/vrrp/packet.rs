//! VRRP advertisements on the wire: RFC 3768 (version 2, keepalived's default, with its
//! simple-text "PASS" authentication) and RFC 5798 (version 3, centisecond intervals, a
//! checksum over an IPv4 pseudo-header). Pure: bytes in, checked values out.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const PROTO_VRRP: u8 = 112;
/// The IPv4 multicast group adverts go to (unless peers are unicast).
pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Adverts must arrive with this IP TTL: one that crossed a router is dropped.
pub const TTL: u8 = 255;

/// Version 2 "simple text password" authentication (8 bytes, zero-padded).
const AUTH_PASS: u8 = 1;

/// One advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    /// 0: the master is leaving; 255: the address owner.
    pub priority: u8,
    /// In centiseconds (version 2 carries whole seconds: multiples of 100).
    pub interval_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
    /// Version 2 PASS authentication, zero-padded to 8 bytes.
    pub password: Option<[u8; 8]>,
}

/// Why a received advert is dropped (each is counted, none acted on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// IP TTL other than 255: it crossed a router.
    Ttl,
    /// Shorter than its header and addresses.
    Truncated,
    /// Version other than the instance's, or a type other than ADVERTISEMENT.
    Version,
    Checksum,
    /// Another virtual router.
    Vrid,
    /// Version 2: the advertisement interval differs from ours (RFC 3768 7.1).
    Interval,
    /// Version 2: missing or wrong password.
    Auth,
    /// No addresses, or more than fit.
    AddressCount,
}

/// The ones' complement sum of `data` as 16-bit words, folded.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of a VRRP message (its checksum field zeroed): version 3 adds the IPv4
/// pseudo-header.
fn checksum(version: u8, message: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    let mut acc = 0;
    if version == 3 {
        acc = sum16(acc, &src.octets());
        acc = sum16(acc, &dst.octets());
        acc = sum16(acc, &[0, PROTO_VRRP]);
        acc = sum16(acc, &(message.len() as u16).to_be_bytes());
    }
    fold(sum16(acc, message))
}

impl Advert {
    /// The VRRP message (the IP payload) from `src` to `dst`.
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut out = vec![
            (self.version << 4) | 1,
            self.vrid,
            self.priority,
            self.addresses.len() as u8,
        ];
        if self.version == 2 {
            out.push(if self.password.is_some() {
                AUTH_PASS
            } else {
                0
            });
            out.push((self.interval_cs / 100).max(1) as u8);
        } else {
            out.extend_from_slice(&(self.interval_cs & 0x0fff).to_be_bytes());
        }
        out.extend_from_slice(&[0, 0]);
        for a in &self.addresses {
            out.extend_from_slice(&a.octets());
        }
        if self.version == 2 {
            out.extend_from_slice(&self.password.unwrap_or([0; 8]));
        }
        let sum = checksum(self.version, &out, src, dst);
        out[6..8].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// Reads and checks a received message (the IP payload, with the IP header's TTL,
    /// source and destination) for an instance of `version`, `vrid`, version 2 `interval_cs`
    /// and `password`.
    pub fn decode(
        message: &[u8],
        ttl: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        expect: &Expect,
    ) -> Result<Advert, Rejected> {
        if ttl != TTL {
            return Err(Rejected::Ttl);
        }
        if message.len() < 8 {
            return Err(Rejected::Truncated);
        }
        let version = message[0] >> 4;
        if version != expect.version || message[0] & 0x0f != 1 {
            return Err(Rejected::Version);
        }
        let count = usize::from(message[3]);
        let auth_len = if version == 2 { 8 } else { 0 };
        if message.len() < 8 + 4 * count + auth_len {
            return Err(Rejected::Truncated);
        }
        // The checksum covers the whole message as received (RFC: the VRRP message).
        let mut zeroed = message[..8 + 4 * count + auth_len].to_vec();
        let received = u16::from_be_bytes([zeroed[6], zeroed[7]]);
        zeroed[6..8].copy_from_slice(&[0, 0]);
        if checksum(version, &zeroed, src, dst) != received {
            return Err(Rejected::Checksum);
        }
        if message[1] != expect.vrid {
            return Err(Rejected::Vrid);
        }
        if count == 0 {
            return Err(Rejected::AddressCount);
        }
        let interval_cs = if version == 2 {
            u16::from(message[5]) * 100
        } else {
            u16::from_be_bytes([message[4], message[5]]) & 0x0fff
        };
        let password = if version == 2 {
            let auth_type = message[4];
            let data: [u8; 8] = message[8 + 4 * count..8 + 4 * count + 8]
                .try_into()
                .expect("8 bytes");
            match (expect.password, auth_type) {
                (Some(want), AUTH_PASS) if data == want => Some(data),
                (None, 0) => None,
                _ => return Err(Rejected::Auth),
            }
        } else {
            None
        };
        // Version 2: the sender's must equal ours. Version 3: 0 is no interval at all (a
        // backup would compute a master-down time of 0 and flap).
        if (version == 2 && interval_cs != expect.interval_cs) || interval_cs == 0 {
            return Err(Rejected::Interval);
        }
        let addresses = message[8..8 + 4 * count]
            .chunks_exact(4)
            .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            .collect();
        Ok(Advert {
            version,
            vrid: message[1],
            priority: message[2],
            interval_cs,
            addresses,
            password,
        })
    }
}

/// What a receiving instance accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub version: u8,
    pub vrid: u8,
    /// Version 2 only: the sender's interval must equal ours.
    pub interval_cs: u16,
    pub password: Option<[u8; 8]>,
}

/// A keepalived `auth_pass`: at most 8 bytes, zero-padded (keepalived truncates longer ones).
pub fn password(text: &str) -> [u8; 8] {
    let mut out = [0; 8];
    for (o, b) in out.iter_mut().zip(text.bytes()) {
        *o = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const VIPS: [Ipv4Addr; 2] = [
        Ipv4Addr::new(198, 18, 0, 100),
        Ipv4Addr::new(198, 18, 0, 101),
    ];

    fn advert(version: u8) -> Advert {
        Advert {
            version,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            addresses: VIPS.to_vec(),
            password: (version == 2).then(|| password("secret")),
        }
    }

    fn expect(version: u8) -> Expect {
        Expect {
            version,
            vrid: 51,
            interval_cs: 100,
            password: (version == 2).then(|| password("secret")),
        }
    }

    #[test]
    fn adverts_round_trip_in_both_versions() {
        for version in [2, 3] {
            let bytes = advert(version).encode(SRC, MULTICAST);
            assert_eq!(bytes.len(), 8 + 8 + if version == 2 { 8 } else { 0 });
            assert_eq!(
                Advert::decode(&bytes, TTL, SRC, MULTICAST, &expect(version)),
                Ok(advert(version))
            );
        }
    }

    #[test]
    fn the_version_2_layout_is_rfc_3768s() {
        let bytes = advert(2).encode(SRC, MULTICAST);
        // Version 2, type 1; VRID; priority; count; auth type PASS; interval 1 s.
        assert_eq!(&bytes[..6], &[0x21, 51, 150, 2, 1, 1]);
        assert_eq!(&bytes[8..12], &[198, 18, 0, 100]);
        assert_eq!(&bytes[16..24], b"secret\0\0");
        // The checksum makes the message sum to zero (ones' complement).
        assert_eq!(fold(sum16(0, &bytes)), 0);
    }

    #[test]
    fn the_version_3_checksum_covers_the_pseudo_header() {
        let bytes = advert(3).encode(SRC, MULTICAST);
        assert_eq!(&bytes[..6], &[0x31, 51, 150, 2, 0, 100]);
        // Valid from SRC to the group...
        assert!(Advert::decode(&bytes, TTL, SRC, MULTICAST, &expect(3)).is_ok());
        // ...not as if sent by another address.
        assert_eq!(
            Advert::decode(
                &bytes,
                TTL,
                Ipv4Addr::new(198, 18, 0, 3),
                MULTICAST,
                &expect(3)
            ),
            Err(Rejected::Checksum)
        );
    }

    #[test]
    fn what_the_rfc_says_to_drop_is_dropped() {
        let v2 = advert(2).encode(SRC, MULTICAST);
        let check = |bytes: &[u8], ttl, want: Rejected| {
            assert_eq!(
                Advert::decode(bytes, ttl, SRC, MULTICAST, &expect(2)),
                Err(want)
            );
        };
        check(&v2, 64, Rejected::Ttl);
        check(&v2[..10], TTL, Rejected::Truncated);
        let mut corrupt = v2.clone();
        corrupt[2] ^= 1;
        check(&corrupt, TTL, Rejected::Checksum);
        let other_vrid = Advert {
            vrid: 52,
            ..advert(2)
        }
        .encode(SRC, MULTICAST);
        check(&other_vrid, TTL, Rejected::Vrid);
        let wrong_pass = Advert {
            password: Some(password("guess")),
            ..advert(2)
        }
        .encode(SRC, MULTICAST);
        check(&wrong_pass, TTL, Rejected::Auth);
        let no_pass = Advert {
            password: None,
            ..advert(2)
        }
        .encode(SRC, MULTICAST);
        check(&no_pass, TTL, Rejected::Auth);
        let slower = Advert {
            interval_cs: 300,
            ..advert(2)
        }
        .encode(SRC, MULTICAST);
        check(&slower, TTL, Rejected::Interval);
        let v3 = advert(3).encode(SRC, MULTICAST);
        check(&v3, TTL, Rejected::Version);
        let empty = Advert {
            addresses: vec![],
            ..advert(2)
        }
        .encode(SRC, MULTICAST);
        check(&empty, TTL, Rejected::AddressCount);
    }

    /// a version 3 advert whose Max Adver Int is 0 is accepted,
    /// and the backup then computes a master-down interval of 0 (see the machine test
    /// `an_advert_with_interval_0_...`). The documented range is 0.01 to 40.95 s.
    #[test]
    fn a_version_3_advert_with_interval_0_is_dropped() {
        let zero = Advert {
            interval_cs: 0,
            ..advert(3)
        }
        .encode(SRC, MULTICAST);
        assert_eq!(
            Advert::decode(&zero, TTL, SRC, MULTICAST, &expect(3)),
            Err(Rejected::Interval)
        );
    }

    #[test]
    fn keepalived_passwords_are_cut_at_8_bytes() {
        assert_eq!(&password("longerthan8"), b"longerth");
        assert_eq!(&password("ab"), b"ab\0\0\0\0\0\0");
    }
}
