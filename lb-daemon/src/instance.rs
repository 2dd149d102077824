//! Whether an instance's daemon is alive, and which process it is.
//!
//! A running `lbd` holds an exclusive `flock` on `/run/lbd/<instance>.lock` for its whole
//! life, and writes its pid file once it serves. The kernel lists every flock with its
//! holder's pid in `/proc/locks`, so the holder is found without touching the lock (taking
//! it, even briefly, could make a starting `lbd run` fail with "already running"). A pid
//! file is believed only when it names that holder: a crashed daemon's pid file, naming a
//! pid that may now be any process, is never signalled.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use crate::{
    error::{Error, Result},
    paths::{self, PinLayout},
};

/// What is known about an instance's daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The lock holder wrote the pid file: it serves and takes SIGHUP.
    Running { pid: i32, config: PathBuf },
    /// Some process holds the lock but has not written its pid file yet (still starting).
    Starting { pid: Option<i32> },
    /// Nobody holds the lock.
    Stopped,
}

/// An instance's lock, held until dropped. Its holder owns the instance's run files: dropping
/// it removes them, then the lock file (see [`release`]), so no way out of `lbd run`, a failed
/// start included, and no cleanup after a crash leaves anything in the run directory.
pub struct InstanceLock {
    instance: String,
    path: PathBuf,
    file: Option<File>,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        for file in paths::run_files(&self.instance) {
            let _ = std::fs::remove_file(file);
        }
        if let Some(file) = self.file.take() {
            release(&self.path, file);
        }
    }
}

/// How long [`lock`] waits for a holder that is not a serving daemon (`lbd stop` cleaning up
/// after a crash, another `lbd run` that is about to fail) before calling the instance busy.
const BRIEF_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes `instance`'s exclusive lock for the life of the returned guard, or says who has it.
pub fn lock(instance: &str) -> Result<InstanceLock> {
    std::fs::create_dir_all(paths::RUN_DIR)?;
    let path = paths::lock_file(instance);
    let deadline = std::time::Instant::now() + BRIEF_HOLDER_WAIT;
    let taken = loop {
        match lock_file(&path) {
            // A serving daemon holds it for good; anyone else only briefly, or is starting.
            Err(LockError::Held)
                if std::time::Instant::now() < deadline
                    && !matches!(liveness(instance), Liveness::Running { .. }) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    let file = taken.map_err(|err| match err {
        LockError::Held => Error::AlreadyRunning {
            instance: instance.to_owned(),
            pid: match liveness(instance) {
                Liveness::Running { pid, .. } => Some(pid),
                Liveness::Starting { pid } => pid,
                Liveness::Stopped => None,
            },
            pin_dir: PinLayout::for_instance(instance).dir,
        },
        LockError::Io(err) => Error::Io(err),
    })?;
    Ok(InstanceLock {
        instance: instance.to_owned(),
        path,
        file: Some(file),
    })
}

#[derive(Debug)]
pub enum LockError {
    /// Another open file description holds it.
    Held,
    Io(io::Error),
}

/// `flock(LOCK_EX | LOCK_NB)` on `path` (created if missing). A stopping daemon removes
/// the file while it still holds the lock ([`release`]): a starter that opened the file just
/// before gets a lock on a name that is gone, sees that, and tries again on a new file.
pub fn lock_file(path: &Path) -> Result<File, LockError> {
    for _ in 0..10 {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(LockError::Io)?;
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LockError::Held
            } else {
                LockError::Io(err)
            });
        }
        if still_named(&file, path) {
            return Ok(file);
        }
    }
    Err(LockError::Io(io::Error::other(format!(
        "{}: removed and made anew under us ten times",
        path.display()
    ))))
}

/// Whether `path` still names the file open as `file`.
fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// Removes the lock file, then lets the lock go: a full stop leaves nothing in the run
/// directory. Removing it while still holding it is what makes this safe (see
/// [`lock_file`]).
pub fn release(path: &Path, lock: File) {
    if still_named(&lock, path) {
        let _ = std::fs::remove_file(path);
    }
    drop(lock);
}

/// The pid holding a `flock` on `path`, from `/proc/locks`: `Ok(None)` when nobody holds
/// it (or the file does not exist), `Ok(Some(0))` when the holder is in a pid namespace we
/// cannot see.
pub fn lock_holder(path: &Path) -> io::Result<Option<i32>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let locks = std::fs::read_to_string("/proc/locks")?;
    Ok(holder_in(&locks, meta.dev(), meta.ino()))
}

/// Parses `/proc/locks` lines (`1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF`; waiters
/// are marked `->` and skipped) for a granted flock on the file `(dev, ino)`.
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<i32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, file, ..] if *file == want => pid.parse().ok(),
            _ => None,
        }
    })
}

/// The instance's daemon, as far as the lock and the pid file prove it.
pub fn liveness(instance: &str) -> Liveness {
    liveness_at(&paths::lock_file(instance), &paths::pid_file(instance))
}

/// [`liveness`] with explicit paths.
pub fn liveness_at(lock: &Path, pid_file: &Path) -> Liveness {
    let Ok(Some(holder)) = lock_holder(lock) else {
        return Liveness::Stopped;
    };
    let recorded = std::fs::read_to_string(pid_file).ok().and_then(|text| {
        let mut lines = text.lines();
        let pid: i32 = lines.next()?.trim().parse().ok()?;
        Some((pid, PathBuf::from(lines.next().unwrap_or_default())))
    });
    match recorded {
        // A holder we cannot see (another pid namespace) cannot vouch for any pid.
        Some((pid, config)) if pid == holder && pid > 0 => Liveness::Running { pid, config },
        _ => Liveness::Starting {
            pid: (holder > 0).then_some(holder),
        },
    }
}

/// The pid of the instance's daemon, once it serves.
pub fn running_pid(instance: &str) -> Option<i32> {
    match liveness(instance) {
        Liveness::Running { pid, .. } => Some(pid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbd-instance-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 77 fe:00:1234 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 99 fe:00:5678 0 EOF\n";
        let dev = libc::makedev(0xfe, 0) as u64;
        assert_eq!(holder_in(locks, dev, 1234), Some(4242));
        assert_eq!(
            holder_in(locks, dev, 5678),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(holder_in(locks, dev, 1), None);
    }

    /// A full stop removes its lock file; a starter that opened the old file before it was
    /// removed gets a lock on a name that is gone, and must not count it as the lock.
    #[test]
    fn a_released_lock_leaves_no_file_and_a_lock_on_the_removed_file_does_not_count() {
        let dir = temp_dir("release");
        let path = dir.join("r.lock");
        let held = lock_file(&path).unwrap();
        assert!(matches!(lock_file(&path), Err(LockError::Held)));
        // A starter opens the file now, before the holder removes it.
        let early = std::fs::File::open(&path).unwrap();
        release(&path, held);
        assert!(!path.exists(), "the lock file is left behind");
        // SAFETY: flock on an open descriptor.
        assert_eq!(
            unsafe { libc::flock(early.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0,
            "the old file's lock is free"
        );
        assert!(!still_named(&early, &path), "a lock on a removed file");
        // The next starter makes a new file and holds it, though `early` holds the old one.
        let next = lock_file(&path).unwrap();
        assert!(still_named(&next, &path));
        assert!(matches!(lock_file(&path), Err(LockError::Held)));
        release(&path, next);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_holder_of_a_lock_taken_here_is_this_process() {
        let dir = temp_dir("holder");
        let lock = dir.join("x.lock");
        assert_eq!(lock_holder(&lock).unwrap(), None, "no file yet");
        let held = lock_file(&lock).unwrap();
        assert_eq!(lock_holder(&lock).unwrap(), Some(std::process::id() as i32));
        drop(held);
        assert_eq!(lock_holder(&lock).unwrap(), None);
    }

    #[test]
    fn a_pid_file_not_naming_the_lock_holder_is_not_believed() {
        let dir = temp_dir("stale");
        let (lock, pid_file) = (dir.join("i.lock"), dir.join("i.pid"));
        // A crashed daemon's pid file, naming pid 1 (alive, and certainly not ours).
        std::fs::write(&pid_file, "1\n/etc/lbd.toml\n").unwrap();
        assert_eq!(liveness_at(&lock, &pid_file), Liveness::Stopped);
        let _held = lock_file(&lock).unwrap();
        let me = std::process::id() as i32;
        assert_eq!(
            liveness_at(&lock, &pid_file),
            Liveness::Starting { pid: Some(me) }
        );
        std::fs::write(&pid_file, format!("{me}\n/etc/lbd.toml\n")).unwrap();
        assert_eq!(
            liveness_at(&lock, &pid_file),
            Liveness::Running {
                pid: me,
                config: PathBuf::from("/etc/lbd.toml")
            }
        );
    }

    /// The old probe took the lock for a moment, so a daemon starting at that moment failed
    /// with "already running". Probing now only reads /proc/locks: a tight probe loop on
    /// one thread never makes a lock attempt on another fail.
    #[test]
    fn probing_liveness_never_makes_a_starting_daemon_fail_to_lock() {
        let dir = temp_dir("probe");
        let (lock, pid_file) = (dir.join("p.lock"), dir.join("p.pid"));
        std::fs::write(&lock, "").unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = liveness_at(&lock, &pid_file);
                }
            });
            for attempt in 0..20_000 {
                match lock_file(&lock) {
                    Ok(file) => drop(file),
                    Err(err) => {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        panic!("attempt {attempt}: lock refused while only probed: {err:?}");
                    }
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
}
