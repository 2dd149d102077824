//! Talking to a running instance: `lbd reload` and `lbd status`.

use std::time::{Duration, Instant};

use crate::{
    daemon::running_pid,
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

/// Sends SIGHUP to a running instance and waits for its verdict on the new config.
/// Returns the daemon's message; an `Err` if it rejected the file.
pub fn reload(instance: &str, wait: Duration) -> Result<String> {
    let pid = running_pid(instance).ok_or_else(|| Error::NotRunning {
        instance: instance.to_owned(),
        pin_dir: PinLayout::for_instance(instance).dir,
    })?;
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
                Err(Error::ReloadRefused(result))
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::ReloadRefused(format!(
        "no answer from lbd (pid {pid}) within {wait:?}"
    )))
}
