//! Atomic, durable writes: a saved file is either the complete old file or the complete new
//! one, never partial (invariant 5 in docs/contracts.md), and a failed write never damages the old file
//! (invariant 6).
//!
//! The bytes go to a temp file in the target's own directory (so the rename cannot cross a
//! filesystem), named `.<name>.<random>.artpipe-tmp` — the pipeline sweeps leftovers by that
//! exact suffix after a SIGKILL, skipping any that a live writer still holds locked (flock).
//! Then `sync_all`, rename over the target, fsync the directory
//! so the rename itself survives a power cut. On any error the temp file is removed. A
//! directory, FIFO, socket or device at the target path is refused: renaming over a directory
//! fails late and confusingly, and opening a FIFO would block the writer forever.
//! No parent directory is created here; the caller decides where directories may appear.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CoreError, CoreResult};

/// Suffix of every temp file we create; the pipeline's sweeper matches on it.
pub const TEMP_SUFFIX: &str = ".artpipe-tmp";

// errno values, identical on Linux and the BSDs/macOS.
const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Directory a path's file lives in ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuse targets we must not replace, and a missing parent, before any work is done.
pub fn check_target(path: &Path) -> CoreResult<()> {
    let Some(_) = path.file_name() else {
        return Err(CoreError::save(
            EINVAL,
            "the path names no file (it ends in '/' or '..')",
            path,
        ));
    };
    let dir = parent_dir(path);
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CoreError::save(
                ENOTDIR,
                format!(
                    "the parent {} is not a directory; nothing was written",
                    dir.display()
                ),
                path,
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(CoreError::save(
                ENOENT,
                format!(
                    "the parent directory {} does not exist (write_image creates no \
                     directories; create it first)",
                    dir.display()
                ),
                path,
            ))
        }
        Err(e) => {
            return Err(CoreError::from_io(
                "cannot inspect the parent directory",
                &e,
                path,
            ))
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) => {
            let kind = m.file_type();
            if kind.is_file() || kind.is_symlink() {
                Ok(())
            } else if kind.is_dir() {
                Err(CoreError::save(
                    EISDIR,
                    "the target is a directory, not a file; refusing to replace it (nothing was \
                     written)",
                    path,
                ))
            } else {
                Err(CoreError::save(
                    EINVAL,
                    format!(
                        "the target is a {}, not a regular file; refusing to write through it \
                         (nothing was written)",
                        special_kind(&kind)
                    ),
                    path,
                ))
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CoreError::from_io("cannot inspect the target", &e, path)),
    }
}

#[cfg(unix)]
fn special_kind(kind: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "FIFO (named pipe)"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_kind: &fs::FileType) -> &'static str {
    "special file"
}

/// `.<name>.<random>.artpipe-tmp`, with the name cut so the result stays under NAME_MAX.
fn temp_name(name: &OsStr) -> String {
    let name = name.to_string_lossy();
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let seed = (
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::thread::current().id(),
    );
    let random = RandomState::new().hash_one(seed);
    format!(
        ".{}.{random:016x}{TEMP_SUFFIX}",
        name.get(..cut).unwrap_or("")
    )
}

fn create_temp(dir: &Path, name: &OsStr, target: &Path) -> CoreResult<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(temp_name(name));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(CoreError::from_io(
                    "cannot create a temporary file in the target directory",
                    &e,
                    target,
                ))
            }
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::from(ErrorKind::AlreadyExists));
    Err(CoreError::from_io(
        "cannot find a free temporary file name",
        &e,
        target,
    ))
}

/// Lock the temp file (flock) for as long as this writer owns it: the sweeper removes only
/// temp files it can lock, so it never deletes another live writer's file (a second run or a
/// Dask shard writing the same folder), while a SIGKILLed writer's lock is gone with it.
/// Filesystems without locks only lose that protection, not the write.
fn hold_while_writing(file: &File) {
    if let Err(e) = file.lock() {
        debug_assert!(
            e.kind() != ErrorKind::WouldBlock,
            "a new temp file is never locked"
        );
    }
}

/// Write `bytes` to `path` atomically and durably (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> CoreResult<()> {
    check_target(path)?;
    let dir = parent_dir(path);
    let name = path.file_name().unwrap_or_else(|| OsStr::new("image"));
    let (tmp, mut file) = create_temp(dir, name, path)?;
    hold_while_writing(&file);
    let steps = (|| -> Result<(), (&'static str, std::io::Error)> {
        file.write_all(bytes)
            .map_err(|e| ("cannot write the temporary file", e))?;
        file.sync_all()
            .map_err(|e| ("cannot flush the temporary file to disk", e))?;
        fs::rename(&tmp, path).map_err(|e| ("cannot rename the temporary file over the target", e))
    })();
    drop(file); // releases the lock, after the rename
    if let Err((what, e)) = steps {
        // Best effort: the temp file may already be gone; the original error is what matters.
        let _ = fs::remove_file(&tmp);
        return Err(CoreError::from_io(what, &e, path));
    }
    sync_dir(dir, path)
}

/// fsync the directory so the rename is durable. Filesystems that cannot sync a directory
/// (EINVAL) get the rename without the guarantee rather than a failed save.
fn sync_dir(dir: &Path, target: &Path) -> CoreResult<()> {
    let result = File::open(dir).and_then(|d| d.sync_all());
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(EINVAL) => Ok(()),
        Err(e) => Err(CoreError::from_io(
            "the file was replaced but its directory could not be flushed to disk",
            &e,
            target,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "artpipe-write-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(TEMP_SUFFIX))
            .collect()
    }

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = scratch("replace");
        let target = dir.join("poster.jpg");
        write_atomic(&target, b"old").unwrap();
        write_atomic(&target, b"new bytes").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new bytes");
        assert!(leftovers(&dir).is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_temp_file_is_locked_while_its_writer_holds_it() {
        let dir = scratch("lock");
        let (tmp, file) = create_temp(&dir, OsStr::new("p.jpg"), &dir.join("p.jpg")).unwrap();
        hold_while_writing(&file);
        let other = File::open(&tmp).unwrap();
        assert!(other.try_lock().is_err(), "a sweeper must not get the lock");
        drop(file);
        assert!(other.try_lock().is_ok(), "the lock goes with the writer");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_names_keep_the_sweeper_suffix_and_are_unique() {
        let a = temp_name(OsStr::new("poster.jpg"));
        let b = temp_name(OsStr::new("poster.jpg"));
        assert!(
            a.starts_with(".poster.jpg.") && a.ends_with(TEMP_SUFFIX),
            "{a}"
        );
        assert_ne!(a, b);
        let long = "x".repeat(255);
        assert!(temp_name(OsStr::new(&long)).len() <= 255);
    }

    #[test]
    fn directory_at_target_is_refused_and_left_alone() {
        let dir = scratch("isdir");
        let target = dir.join("fanart.jpg");
        fs::create_dir(&target).unwrap();
        let err = write_atomic(&target, b"x").unwrap_err();
        assert!(matches!(err, CoreError::Save { errno: EISDIR, .. }));
        assert!(err.to_string().contains("directory"), "{err}");
        assert!(target.is_dir());
        assert!(leftovers(&dir).is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_parent_is_an_error_naming_it() {
        let dir = scratch("noparent");
        let target = dir.join("missing").join("poster.jpg");
        let err = write_atomic(&target, b"x").unwrap_err();
        assert!(matches!(err, CoreError::Save { errno: ENOENT, .. }));
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!dir.join("missing").exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
