//! One writer at a time: an exclusive `flock` on `lock` in the state
//! directory, held by `run`, `sync --once` and the entry-editing commands.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};

/// Held while the lock is held; dropping it releases the lock.
pub struct WriterLock {
    _lock: Flock<File>,
}

/// Takes the writer lock, waiting up to `timeout` for another writer.
pub fn acquire(dir: &Path, timeout: Duration) -> anyhow::Result<WriterLock> {
    fs::create_dir_all(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let path = dir.join("lock");
    let deadline = Instant::now() + timeout;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // Who holds it, for the next writer's error message.
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = write!(lock, "{}", std::process::id());
                let _ = lock.flush();
                return Ok(WriterLock { _lock: lock });
            }
            Err((f, _)) => {
                file = f;
                if Instant::now() >= deadline {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    let who = if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    };
                    bail!(
                        "another xdp-blocklist writer{who} holds {} after waiting {}; \
                         wait for it to finish, or stop it (only one of `run` and `sync --once` may write at a time)",
                        path.display(),
                        humantime::format_duration(timeout)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_then_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let e = acquire(dir.path(), Duration::from_millis(200))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("another xdp-blocklist writer") && e.contains("pid"),
            "{e}"
        );
        drop(first);
        acquire(dir.path(), Duration::from_millis(200)).unwrap();
    }
}
