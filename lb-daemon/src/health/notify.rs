//! `notify_up` / `notify_down`: a command run when a backend changes state, in the
//! background, so a slow or failing command never holds up checks or map writes.

use std::{process::Stdio, time::Duration};

use tracing::{debug, warn};

/// How long a notify command may run before it is killed (with what it started).
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `argv` with `args` appended (backend, VIP, reason), without a shell.
pub fn spawn(argv: Vec<String>, args: [String; 3]) {
    tokio::spawn(async move {
        let mut command = tokio::process::Command::new(&argv[0]);
        super::probe::script_env(&mut command, &[]);
        command
            .args(&argv[1..])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                warn!(command = %argv[0], cause = %err, "notify command could not start");
                return;
            }
        };
        let pid = child.id();
        match tokio::time::timeout(NOTIFY_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => debug!(command = %argv[0], "notify command ran"),
            Ok(Ok(status)) => warn!(command = %argv[0], %status, "notify command failed"),
            Ok(Err(err)) => warn!(command = %argv[0], cause = %err, "notify command failed"),
            Err(_) => {
                if let Some(pid) = pid {
                    // SAFETY: the group the command leads (process_group(0)); its leader is
                    // not reaped yet, so the id is still its own.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                let _ = child.wait().await;
                warn!(command = %argv[0], timeout = ?NOTIFY_TIMEOUT, "notify command killed at its timeout");
            }
        }
    });
}
