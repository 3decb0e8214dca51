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
//!
//! With a library root, the write cannot land outside it, even if a folder inside the library
//! is swapped for a symbolic link while the image downloads (the path was checked minutes
//! earlier): the folders are opened one component at a time from the root, each with
//! `O_NOFOLLOW`, and the temp file, the rename and the directory fsync all go through the
//! last folder's descriptor (openat/renameat), so no later path lookup can be redirected.
//! Missing folders below the root are created on the way down (mkdirat), never above it.
//! Without a root no parent directory is created; the caller decides where directories appear.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::error::{CoreError, CoreResult};

/// Suffix of every temp file we create; the pipeline's sweeper matches on it.
pub const TEMP_SUFFIX: &str = ".artpipe-tmp";

// errno values, identical on Linux and the BSDs/macOS.
const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const EXDEV: i32 = 18;
const ELOOP_MESSAGE: &str = "is a symbolic link (or was swapped for one while the image \
                             downloaded); refusing to follow it out of the library root, so \
                             nothing was written";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where a write may land: the target path and, for the pipeline, the library root that every
/// folder between the two must belong to (no symbolic link is followed below the root).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub path: &'a Path,
    pub root: Option<&'a Path>,
}

impl<'a> Target<'a> {
    /// A write anywhere `path` leads, following symbolic links as the OS does (the API default).
    pub fn path(path: &'a Path) -> Self {
        Self { path, root: None }
    }

    /// A write that must stay under `root` (see the module docs).
    pub fn under(root: &'a Path, path: &'a Path) -> Self {
        Self {
            path,
            root: Some(root),
        }
    }
}

/// Directory a path's file lives in ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

/// The folder the target goes in, opened, and the target's file name; `None` when a folder
/// below the root is still missing and `create` is false (it will be created by the write).
struct Parent<'p> {
    dir: OwnedFd,
    name: &'p OsStr,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// Open the root (or, without one, the parent as the OS resolves it).
fn open_start(target: &Target<'_>) -> CoreResult<OwnedFd> {
    let path = target.path;
    let dir = target.root.unwrap_or_else(|| parent_dir(path));
    match rustix::fs::openat(CWD, dir, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOTDIR) => Err(CoreError::save(
            ENOTDIR,
            format!(
                "the parent {} is not a directory; nothing was written",
                dir.display()
            ),
            path,
        )),
        Err(Errno::NOENT) if target.root.is_some() => Err(CoreError::save(
            ENOENT,
            format!(
                "the library root {} does not exist; nothing was written",
                dir.display()
            ),
            path,
        )),
        Err(Errno::NOENT) => Err(CoreError::save(
            ENOENT,
            format!(
                "the parent directory {} does not exist (write_image creates no \
                 directories; create it first)",
                dir.display()
            ),
            path,
        )),
        Err(e) => Err(CoreError::from_io(
            "cannot open the parent directory",
            &io(e),
            path,
        )),
    }
}

/// The folders between the root and the target, checked to be plain names (no `..`).
fn folders_below_root<'p>(root: &Path, path: &'p Path) -> CoreResult<Vec<&'p OsStr>> {
    let outside = || {
        CoreError::save(
            EXDEV,
            format!(
                "the target is outside the library root {}; nothing was written",
                root.display()
            ),
            path,
        )
    };
    let rel = path.strip_prefix(root).map_err(|_| outside())?;
    let mut folders = Vec::new();
    for part in rel.components() {
        match part {
            Component::Normal(name) => folders.push(name),
            Component::CurDir => {}
            _ => return Err(outside()),
        }
    }
    folders.pop(); // the file name itself
    Ok(folders)
}

/// Descend from the start folder to the target's folder without following any link.
fn open_parent<'p>(target: &Target<'p>, create: bool) -> CoreResult<Option<Parent<'p>>> {
    let path = target.path;
    let Some(name) = path.file_name() else {
        return Err(CoreError::save(
            EINVAL,
            "the path names no file (it ends in '/' or '..')",
            path,
        ));
    };
    let folders = match target.root {
        Some(root) => folders_below_root(root, path)?,
        None => Vec::new(),
    };
    let mut dir = open_start(target)?;
    let mut walked = target.root.map(Path::to_path_buf).unwrap_or_default();
    for folder in folders {
        walked.push(folder);
        let flags = dir_flags() | OFlags::NOFOLLOW;
        let next = match rustix::fs::openat(&dir, folder, flags, Mode::empty()) {
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(Errno::NOENT) => match rustix::fs::mkdirat(&dir, folder, Mode::from(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {
                    rustix::fs::openat(&dir, folder, flags, Mode::empty())
                }
                Err(e) => Err(e),
            },
            other => other,
        };
        dir = match next {
            Ok(fd) => fd,
            Err(e) => return Err(folder_error(&dir, folder, &walked, e, path)),
        };
    }
    Ok(Some(Parent { dir, name }))
}

/// Say why a folder on the way down could not be entered; a link is named as such.
fn folder_error(
    parent: &OwnedFd,
    folder: &OsStr,
    walked: &Path,
    e: Errno,
    path: &Path,
) -> CoreError {
    let is_link = rustix::fs::statat(parent, folder, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        .unwrap_or(false);
    if is_link || e == Errno::LOOP {
        return CoreError::save(
            Errno::LOOP.raw_os_error(),
            format!("the folder {} {ELOOP_MESSAGE}", walked.display()),
            path,
        );
    }
    if e == Errno::NOTDIR {
        return CoreError::save(
            ENOTDIR,
            format!(
                "{} is not a directory; nothing was written",
                walked.display()
            ),
            path,
        );
    }
    CoreError::from_io(
        &format!("cannot open or create the folder {}", walked.display()),
        &io(e),
        path,
    )
}

/// Refuse what is at the target if we must not replace it (a link is fine: the rename
/// replaces the link itself, it never writes through it).
fn check_entry(parent: &Parent<'_>, path: &Path) -> CoreResult<()> {
    match rustix::fs::statat(&parent.dir, parent.name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile | FileType::Symlink => Ok(()),
            FileType::Directory => Err(CoreError::save(
                EISDIR,
                "the target is a directory, not a file; refusing to replace it (nothing was \
                 written)",
                path,
            )),
            kind => Err(CoreError::save(
                EINVAL,
                format!(
                    "the target is a {}, not a regular file; refusing to write through it \
                     (nothing was written)",
                    special_kind(kind)
                ),
                path,
            )),
        },
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(CoreError::from_io(
            "cannot inspect the target",
            &io(e),
            path,
        )),
    }
}

/// Refuse targets we must not replace, a missing parent, and (with a root) a path outside the
/// root or through a link, before any work is done. Creates nothing.
pub fn check_target(target: &Target<'_>) -> CoreResult<()> {
    match open_parent(target, false)? {
        Some(parent) => check_entry(&parent, target.path),
        None => Ok(()),
    }
}

fn special_kind(kind: FileType) -> &'static str {
    match kind {
        FileType::Fifo => "FIFO (named pipe)",
        FileType::Socket => "socket",
        FileType::BlockDevice | FileType::CharacterDevice => "device",
        _ => "special file",
    }
}

/// A number no other temp file of this process (or, very likely, of another) is named by.
pub(crate) fn unique_random() -> u64 {
    let seed = (
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::thread::current().id(),
    );
    RandomState::new().hash_one(seed)
}

/// `.<name>.<random>.artpipe-tmp`, with the name cut so the result stays under NAME_MAX.
fn temp_name(name: &OsStr) -> String {
    let name = name.to_string_lossy();
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let random = unique_random();
    format!(
        ".{}.{random:016x}{TEMP_SUFFIX}",
        name.get(..cut).unwrap_or("")
    )
}

fn create_temp(dir: &OwnedFd, name: &OsStr, target: &Path) -> CoreResult<(String, File)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let tmp = temp_name(name);
        match rustix::fs::openat(dir, tmp.as_str(), flags, Mode::from(0o666)) {
            Ok(fd) => return Ok((tmp, File::from(fd))),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => {
                return Err(CoreError::from_io(
                    "cannot create a temporary file in the target directory",
                    &io(e),
                    target,
                ))
            }
        }
    }
    Err(CoreError::from_io(
        "cannot find a free temporary file name",
        &io(last),
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

/// A file written under its temp name in the target's folder: complete, locked, but neither
/// durable nor in place yet. `commit` makes a batch of them durable with one sync pass and
/// renames each over its target; dropped uncommitted, the temp file is removed.
pub struct Staged {
    dir: OwnedFd,
    tmp: String,
    name: OsString,
    target: PathBuf,
    file: Option<File>,
    /// The file's mtime in nanoseconds; the rename keeps it, so it is the target's mtime.
    pub mtime_ns: i64,
}

impl Staged {
    pub fn target(&self) -> &Path {
        &self.target
    }

    fn rename(&self) -> std::io::Result<()> {
        rustix::fs::renameat(&self.dir, self.tmp.as_str(), &self.dir, &self.name).map_err(io)
    }

    /// The temp file is in place (or gone): nothing is left to remove; the lock goes with it.
    fn finish(&mut self) {
        self.tmp.clear();
        self.file = None;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            // Best effort, while the lock is still held, so no sweeper races us to it.
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// Write `bytes` to a temp file beside the target (created, locked, written; not synced).
pub fn stage(target: &Target<'_>, bytes: &[u8]) -> CoreResult<Staged> {
    let path = target.path;
    let Some(parent) = open_parent(target, true)? else {
        return Err(CoreError::save(
            ENOENT,
            "a folder vanished while it was created",
            path,
        ));
    };
    check_entry(&parent, path)?;
    let (tmp, mut file) = create_temp(&parent.dir, parent.name, path)?;
    hold_while_writing(&file);
    let name = parent.name.to_os_string();
    let mut staged = Staged {
        dir: parent.dir,
        tmp,
        name,
        target: path.to_path_buf(),
        file: None,
        mtime_ns: 0,
    };
    file.write_all(bytes)
        .map_err(|e| CoreError::from_io("cannot write the temporary file", &e, path))?;
    let meta = file
        .metadata()
        .map_err(|e| CoreError::from_io("cannot inspect the temporary file", &e, path))?;
    staged.mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    staged.file = Some(file);
    Ok(staged)
}

/// Write `bytes` to the target atomically and durably (see the module docs).
pub fn write_atomic(target: &Target<'_>, bytes: &[u8]) -> CoreResult<()> {
    let mut staged = stage(target, bytes)?;
    let path = target.path;
    if let Some(file) = &staged.file {
        file.sync_all()
            .map_err(|e| CoreError::from_io("cannot flush the temporary file to disk", &e, path))?;
    }
    staged.rename().map_err(|e| {
        CoreError::from_io("cannot rename the temporary file over the target", &e, path)
    })?;
    staged.finish(); // releases the lock, after the rename
    sync_dir(&staged.dir, path)
}

/// Make a batch of staged files durable and put each in place: the group commit.
///
/// Each file is the complete old one or the complete new one at every instant, exactly as
/// with `write_atomic`; a result is `Ok` only once the new file and its name are on disk.
/// The order is that of `write_atomic` for every file, each step done for the whole batch:
/// flush the data of all temp files, rename each over its target, flush the renames. On Linux
/// a flush is one `syncfs` per filesystem in the batch (one journal commit for many files,
/// instead of two fsyncs per file); where `syncfs` fails, or elsewhere, each file and each
/// folder is flushed on its own, so an error is still reported for the file it concerns.
pub fn commit(batch: Vec<Staged>) -> Vec<CoreResult<Staged>> {
    let mut slots: Vec<CoreResult<Staged>> = batch.into_iter().map(Ok).collect();
    flush_data(&mut slots);
    for slot in slots.iter_mut() {
        if let Ok(staged) = slot {
            if let Err(e) = staged.rename() {
                *slot = Err(CoreError::from_io(
                    "cannot rename the temporary file over the target",
                    &e,
                    &staged.target,
                ));
            } else {
                staged.finish();
            }
        }
    }
    flush_names(&mut slots);
    slots
}

/// Filesystems of the staged files (by device), each with one of its folders to sync through.
#[cfg(target_os = "linux")]
fn devices(slots: &[CoreResult<Staged>]) -> Vec<(u64, usize)> {
    let mut seen: Vec<(u64, usize)> = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        if let Ok(staged) = slot {
            let dev = rustix::fs::fstat(&staged.dir).map_or(u64::MAX, |st| st.st_dev);
            if !seen.iter().any(|(d, _)| *d == dev) {
                seen.push((dev, i));
            }
        }
    }
    seen
}

/// Local filesystems whose `syncfs` flushes as much as an fsync of each file would:
/// ext2/3/4, XFS, Btrfs, F2FS, tmpfs (magic numbers from linux/magic.h). On the others —
/// FUSE mounts such as mergerfs or rclone, network filesystems — a `syncfs` may not reach
/// the storage behind the mount where an fsync does, so their files are flushed one by one.
#[cfg(target_os = "linux")]
const SYNCFS_TRUSTED: [i128; 5] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010, 0x0102_1994];

/// Whether this kernel's `syncfs` reports write-back errors: only since Linux 5.8 (before,
/// it returned 0 even when the data never reached the disk, and a file that failed to
/// write would be renamed over a good one as if durable).
#[cfg(target_os = "linux")]
fn syncfs_reports_errors() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| kernel_at_least(&release, (5, 8)))
            .unwrap_or(false)
    })
}

/// `Some(release >= (major, minor))` for a release such as "6.1.0-18-amd64", or None.
#[cfg(target_os = "linux")]
fn kernel_at_least(release: &str, wanted: (u32, u32)) -> Option<bool> {
    let mut numbers = release.trim().split(['.', '-']);
    let major = numbers.next()?.parse::<u32>().ok()?;
    let minor = numbers.next()?.parse::<u32>().ok()?;
    Some((major, minor) >= wanted)
}

/// One `syncfs` per filesystem; false where one failed or is not trusted (see above), and
/// the caller flushes file by file.
#[cfg(target_os = "linux")]
fn sync_filesystems(slots: &[CoreResult<Staged>]) -> bool {
    if !syncfs_reports_errors() {
        return false;
    }
    let found = devices(slots);
    let trusted = |staged: &Staged| {
        rustix::fs::fstatfs(&staged.dir)
            .is_ok_and(|fs| SYNCFS_TRUSTED.contains(&i128::from(fs.f_type)))
    };
    let mut all = true;
    for (dev, i) in found {
        let Ok(staged) = &slots[i] else { continue };
        if dev == u64::MAX || !trusted(staged) || rustix::fs::syncfs(&staged.dir).is_err() {
            all = false;
        }
    }
    all
}

#[cfg(not(target_os = "linux"))]
fn sync_filesystems(_slots: &[CoreResult<Staged>]) -> bool {
    false
}

fn flush_data(slots: &mut [CoreResult<Staged>]) {
    if slots.len() > 1 && sync_filesystems(slots) {
        return;
    }
    for slot in slots.iter_mut() {
        let Ok(staged) = slot else { continue };
        let synced = staged.file.as_ref().map_or(Ok(()), File::sync_all);
        if let Err(e) = synced {
            *slot = Err(CoreError::from_io(
                "cannot flush the temporary file to disk",
                &e,
                &staged.target,
            ));
        }
    }
}

fn flush_names(slots: &mut [CoreResult<Staged>]) {
    if slots.len() > 1 && sync_filesystems(slots) {
        return;
    }
    let mut synced: Vec<(u64, u64)> = Vec::new(); // (device, inode) of folders done
    for slot in slots.iter_mut() {
        let Ok(staged) = slot else { continue };
        let id = rustix::fs::fstat(&staged.dir).map_or((0, 0), |st| (st.st_dev, st.st_ino));
        if id != (0, 0) && synced.contains(&id) {
            continue;
        }
        if let Err(e) = sync_dir(&staged.dir, &staged.target) {
            *slot = Err(e);
        } else {
            synced.push(id);
        }
    }
}

/// fsync the directory so the rename is durable. Filesystems that cannot sync a directory
/// (EINVAL) get the rename without the guarantee rather than a failed save.
fn sync_dir(dir: &OwnedFd, target: &Path) -> CoreResult<()> {
    match rustix::fs::fsync(dir) {
        Ok(()) | Err(Errno::INVAL) => Ok(()),
        Err(e) => Err(CoreError::from_io(
            "the file was replaced but its directory could not be flushed to disk",
            &io(e),
            target,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

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
    fn a_committed_batch_is_in_place_and_a_staged_file_is_not() {
        let dir = scratch("batch");
        let targets: Vec<PathBuf> = (0..5)
            .map(|n| {
                dir.join(format!("f{}", n % 2))
                    .join(format!("poster{n}.jpg"))
            })
            .collect();
        fs::write(dir.join("old.txt"), b"untouched").unwrap();
        let staged: Vec<Staged> = targets
            .iter()
            .enumerate()
            .map(|(n, t)| stage(&Target::under(&dir, t), format!("image {n}").as_bytes()).unwrap())
            .collect();
        assert!(
            targets.iter().all(|t| !t.exists()),
            "nothing in place before commit"
        );
        let results = commit(staged);
        assert!(results.iter().all(Result::is_ok));
        for (n, t) in targets.iter().enumerate() {
            assert_eq!(fs::read(t).unwrap(), format!("image {n}").as_bytes());
            assert!(leftovers(t.parent().unwrap()).is_empty());
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert_eq!(kernel_at_least("6.1.0-18-amd64", (5, 8)), Some(true));
        assert_eq!(kernel_at_least("5.8.0", (5, 8)), Some(true));
        assert_eq!(kernel_at_least("5.4.0-150-generic\n", (5, 8)), Some(false));
        assert_eq!(kernel_at_least("4.4.302+", (5, 8)), Some(false));
        assert_eq!(kernel_at_least("5.10.0-rt", (5, 8)), Some(true));
        assert_eq!(kernel_at_least("garbage", (5, 8)), None);
    }

    #[test]
    fn a_dropped_staged_file_leaves_no_temp_and_the_old_file() {
        let dir = scratch("dropped");
        let target = dir.join("fanart.jpg");
        fs::write(&target, b"old").unwrap();
        let staged = stage(&Target::path(&target), b"new").unwrap();
        assert_eq!(leftovers(&dir).len(), 1);
        drop(staged);
        assert!(leftovers(&dir).is_empty());
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn a_failed_rename_fails_only_its_own_file() {
        let dir = scratch("one-bad");
        let (good, bad) = (dir.join("good.png"), dir.join("bad.png"));
        let batch = vec![
            stage(&Target::path(&good), b"good").unwrap(),
            stage(&Target::path(&bad), b"bad").unwrap(),
        ];
        fs::create_dir(&bad).unwrap(); // a folder appeared where the file goes
        let results = commit(batch);
        assert!(results[0].is_ok());
        let err = results[1]
            .as_ref()
            .err()
            .expect("the rename over a folder fails");
        assert!(err.to_string().contains("bad.png"), "{err}");
        assert_eq!(fs::read(&good).unwrap(), b"good");
        assert!(bad.is_dir());
        drop(results);
        assert!(leftovers(&dir).is_empty());
    }

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = scratch("replace");
        let target = dir.join("poster.jpg");
        write_atomic(&Target::path(&target), b"old").unwrap();
        write_atomic(&Target::path(&target), b"new bytes").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new bytes");
        assert!(leftovers(&dir).is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_temp_file_is_locked_while_its_writer_holds_it() {
        let dir = scratch("lock");
        let fd = rustix::fs::openat(CWD, &dir, dir_flags(), Mode::empty()).unwrap();
        let (tmp, file) = create_temp(&fd, OsStr::new("p.jpg"), &dir.join("p.jpg")).unwrap();
        hold_while_writing(&file);
        let other = File::open(dir.join(tmp)).unwrap();
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
        let err = write_atomic(&Target::path(&target), b"x").unwrap_err();
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
        let err = write_atomic(&Target::path(&target), b"x").unwrap_err();
        assert!(matches!(err, CoreError::Save { errno: ENOENT, .. }));
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!dir.join("missing").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn folders_below_the_root_are_created() {
        let root = scratch("mkdirs");
        let target = root.join("Movies").join("Alien (1979)").join("poster.jpg");
        write_atomic(&Target::under(&root, &target), b"x").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_folder_swapped_for_a_link_out_of_the_root_receives_nothing() {
        let root = scratch("swap");
        let outside = scratch("outside");
        std::os::unix::fs::symlink(&outside, root.join("Movies")).unwrap();
        let target = root.join("Movies").join("poster.jpg");
        let err = write_atomic(&Target::under(&root, &target), b"x").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = check_target(&Target::under(&root, &target)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        // Without a root the API follows the link, as the OS would.
        write_atomic(&Target::path(&target), b"x").unwrap();
        assert!(outside.join("poster.jpg").is_file());
        fs::remove_dir_all(root).unwrap();
        fs::remove_dir_all(outside).unwrap();
    }

    #[test]
    fn a_root_that_is_itself_a_link_is_followed() {
        let real = scratch("realroot");
        let link = real.with_extension("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let target = link.join("Show").join("fanart.jpg");
        write_atomic(&Target::under(&link, &target), b"x").unwrap();
        assert!(real.join("Show").join("fanart.jpg").is_file());
        fs::remove_file(link).unwrap();
        fs::remove_dir_all(real).unwrap();
    }

    #[test]
    fn a_target_outside_the_root_is_refused() {
        let root = scratch("outsideroot");
        for target in [
            root.with_extension("x").join("poster.jpg"),
            root.join("..").join("p.jpg"),
        ] {
            let err = write_atomic(&Target::under(&root, &target), b"x").unwrap_err();
            assert!(matches!(err, CoreError::Save { errno: EXDEV, .. }), "{err}");
        }
        fs::remove_dir_all(root).unwrap();
    }
}
