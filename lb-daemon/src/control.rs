//! Talking to a running instance: `lbd reload` and `lbd status`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    daemon::running,
    dataplane::{pins::PinnedMaps, snapshot},
    error::{Error, Result},
    paths::{self, PinLayout},
};

/// The status table of a running instance.
pub fn status(instance: &str) -> Result<String> {
    let maps = PinnedMaps::open(&PinLayout::for_instance(instance), instance)?;
    Ok(crate::status::render(instance, &snapshot::read(&maps)?))
}

fn reload_generation(instance: &str) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(paths::reload_status_file(instance)).ok()?;
    let (generation, result) = text.trim().split_once(' ')?;
    Some((generation.parse().ok()?, result.to_owned()))
}

/// Sends SIGHUP to the instance running `config` and waits for its verdict on the file.
/// Returns the daemon's message; an `Err` if it rejected the file, or if that instance was
/// started with another file (it would re-read that one, not `config`).
pub fn reload(instance: &str, config: &Path, wait: Duration) -> Result<String> {
    let (pid, daemon_config) = running(instance).ok_or_else(|| Error::NotRunning {
        instance: instance.to_owned(),
        pin_dir: PinLayout::for_instance(instance).dir,
    })?;
    let given = std::fs::canonicalize(config)?;
    if given != daemon_config {
        return Err(Error::ReloadRefused(format!(
            "instance {instance} (pid {pid}) runs with {}, not {}: edit that file, or restart with this one",
            daemon_config.display(),
            given.display()
        )));
    }
    let before = reload_generation(instance).map_or(0, |(g, _)| g);
    // SAFETY: sends a signal to a pid read from our own pid file.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some((generation, result)) = reload_generation(instance)
            && generation > before
        {
            return if result.starts_with("ok") {
                Ok(result)
            } else {
                Err(Error::ReloadRejected(
                    result.trim_start_matches("error: ").to_owned(),
                ))
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::ReloadRefused(format!(
        "no answer from lbd (pid {pid}) within {wait:?}"
    )))
}
