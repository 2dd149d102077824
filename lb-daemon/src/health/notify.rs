//! `notify_up` / `notify_down`: a command run when a backend changes state, in the
//! background, so a slow or failing command never holds up checks or map writes.

use std::time::Duration;

use tracing::{debug, warn};

/// How long a notify command may run before it is killed (with what it started).
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `argv` with `args` appended (backend, VIP, reason; or VRRP's instance, state and
/// priority), without a shell, with `PATH` and `env` only (`LBD_BACKEND`, ...).
pub fn spawn(argv: Vec<String>, args: Vec<String>, env: Vec<(&'static str, String)>) {
    tokio::spawn(async move {
        let mut command = super::probe::command(&argv, &args, &env);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Notify commands run with the environment a check script gets (PATH, LBD_BACKEND,
    /// LBD_PORT, LBD_VIP), nothing else of lbd's.
    #[tokio::test(flavor = "current_thread")]
    async fn notify_gets_the_script_environment() {
        let out = std::env::temp_dir().join(format!("lbd-notify-env-{}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        super::spawn(
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("env > {}", out.display()),
            ],
            vec![
                "198.18.0.12:6379".into(),
                "198.18.0.100:6379".into(),
                "PONG".into(),
            ],
            vec![
                ("LBD_BACKEND", "198.18.0.12".into()),
                ("LBD_PORT", "6379".into()),
                ("LBD_VIP", "198.18.0.100".into()),
            ],
        );
        let mut env = String::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(text) = std::fs::read_to_string(&out)
                && !text.is_empty()
            {
                env = text;
                break;
            }
        }
        let _ = std::fs::remove_file(&out);
        assert!(env.contains("PATH="), "the command did not run: {env:?}");
        for var in ["LBD_BACKEND=", "LBD_PORT=", "LBD_VIP="] {
            assert!(env.contains(var), "{var} missing; notify env: {env:?}");
        }
    }
}
