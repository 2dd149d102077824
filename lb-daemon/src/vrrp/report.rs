//! The VRRP state file (`/run/lbd/<instance>.vrrp`): written by the daemon, read by
//! `lbd status`. One instance a line, tab-separated:
//! `name  interface  vrid  state  priority  master  since_unix_ms  sent  received  rejected  reason`
//! (`rejected` is `reason=count,...` or `-`).

use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// One instance's state, as `lbd status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpLine {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// `init`, `backup`, `master` or `stopped`.
    pub state: String,
    pub priority: u8,
    /// The master's address as last heard (ourselves while master).
    pub master: Option<Ipv4Addr>,
    /// When the current state began.
    pub since: SystemTime,
    pub sent: u64,
    pub received: u64,
    /// Adverts dropped, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Why the last transition happened.
    pub reason: String,
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn field(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Rejected adverts as `reason=count,...`; `None` when there are none.
pub fn rejected_text(rejected: &BTreeMap<String, u64>) -> Option<String> {
    (!rejected.is_empty()).then(|| {
        rejected
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Writes `lines` atomically (a reader never sees half a file).
pub fn write(path: &Path, lines: &[VrrpLine]) -> io::Result<()> {
    let mut text = String::new();
    for l in lines {
        let rejected = rejected_text(&l.rejected).unwrap_or_else(|| "-".to_owned());
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            l.name,
            l.interface,
            l.vrid,
            l.state,
            l.priority,
            l.master.map_or("-".to_owned(), |a| a.to_string()),
            millis(l.since),
            l.sent,
            l.received,
            rejected,
            field(&l.reason),
        ));
    }
    let tmp = path.with_extension("vrrp.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads the file back; lines that do not parse are skipped.
pub fn read(path: &Path) -> io::Result<Vec<VrrpLine>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().filter_map(parse).collect())
}

fn parse(line: &str) -> Option<VrrpLine> {
    let f: Vec<&str> = line.splitn(11, '\t').collect();
    if f.len() != 11 {
        return None;
    }
    let rejected = if f[9] == "-" {
        BTreeMap::new()
    } else {
        f[9].split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    };
    Some(VrrpLine {
        name: f[0].to_owned(),
        interface: f[1].to_owned(),
        vrid: f[2].parse().ok()?,
        state: f[3].to_owned(),
        priority: f[4].parse().ok()?,
        master: f[5].parse().ok(),
        since: UNIX_EPOCH + Duration::from_millis(f[6].parse().ok()?),
        sent: f[7].parse().ok()?,
        received: f[8].parse().ok()?,
        rejected,
        reason: f[10].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written() {
        let path = std::env::temp_dir().join(format!("lbd-vrrp-report-{}", std::process::id()));
        let line = VrrpLine {
            name: "VI_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            state: "master".into(),
            priority: 150,
            master: Some(Ipv4Addr::new(198, 18, 0, 2)),
            since: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            sent: 12,
            received: 3,
            rejected: [("ttl".to_owned(), 2), ("auth".to_owned(), 1)].into(),
            reason: "no advert\tfor 3.6 s".into(),
        };
        write(&path, std::slice::from_ref(&line)).unwrap();
        let back = read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            back,
            vec![VrrpLine {
                reason: "no advert for 3.6 s".into(),
                ..line
            }]
        );
    }
}
