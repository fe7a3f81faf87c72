//! Advisory locks between diffris processes: one process at a time trains a run directory, and
//! one at a time writes a cache entry (random weights, a SynthRS set, an encoded split) while
//! the others wait and then reuse it.
//!
//! The locks are `flock`s on small sibling files (`std::fs::File::lock`): the operating system
//! releases them when their process ends, however it ends, so a killed run never leaves a
//! stale lock behind. The lock file holds the owner's process id, for the messages.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of `entry`: `.NAME.lock` beside it.
pub fn lock_path(entry: &Path) -> PathBuf {
    let name = entry
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("entry");
    entry.with_file_name(format!(".{name}.lock"))
}

fn open(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))
}

/// Records this process as the owner.
fn own(mut file: File, path: &Path) -> anyhow::Result<Lock> {
    let pid = std::process::id().to_string();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .with_context(|| format!("writing the lock file {}", path.display()))?;
    Ok(Lock {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// The process id written in a held lock file, as text for a message.
fn owner(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("process {pid}"),
        Err(_) => "another process".into(),
    }
}

/// Takes the lock at `path` if no other process holds it; `Ok(Err(owner))` names the holder.
pub fn try_lock(path: &Path) -> anyhow::Result<Result<Lock, String>> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => own(file, path).map(Ok),
        Err(TryLockError::WouldBlock) => Ok(Err(owner(&mut file))),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Takes the lock at `path`, waiting for its holder; `waiting` is called once, with the
/// holder's name, if the lock is held.
pub fn lock_waiting(path: &Path, waiting: impl FnOnce(&str)) -> anyhow::Result<Lock> {
    match try_lock(path)? {
        Ok(lock) => Ok(lock),
        Err(owner) => {
            waiting(&owner);
            let file = open(path)?;
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
            own(file, path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_owner_and_is_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir.path().join("entry"));
        assert_eq!(path, dir.path().join(".entry.lock"));
        let held = try_lock(&path).unwrap().unwrap();
        // flock excludes other open file descriptions, also in this process.
        let owner = try_lock(&path).unwrap().unwrap_err();
        assert_eq!(owner, format!("process {}", std::process::id()));

        // A waiter is told who holds the lock, and gets it when the holder lets go.
        let (tell, told) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let lock = lock_waiting(&path, |o| tell.send(o.to_string()).unwrap()).unwrap();
                lock.path().to_path_buf()
            })
        };
        assert_eq!(told.recv().unwrap(), owner);
        drop(held);
        assert_eq!(waiter.join().unwrap(), path);
        assert!(try_lock(&path).unwrap().is_ok(), "free after both dropped");
    }
}
