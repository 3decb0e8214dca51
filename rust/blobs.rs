//! The download cache's blob files: named by the sha256 of their bytes, written whole.
//!
//! A blob goes to `<folder>/<first two hex digits>/<sha256>`, through a temp file in the same
//! folder and a rename, so a reader sees all of it or nothing. Blobs are not fsynced: each is
//! verified against its name on read, so one a power cut truncated is a miss, never wrong
//! bytes. A blob already there is kept only if its bytes still hash to its name.
//!
//! Many blobs per call: the cache hands a batch of downloads here at once, so the hashing
//! and the file system calls for all of them run in one stretch without Python's lock.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Where the blob of `sha` lives under `folder`.
pub fn blob_path(folder: &Path, sha: &str) -> PathBuf {
    folder.join(sha.get(..2).unwrap_or("xx")).join(sha)
}

/// Whether the file at `path` holds exactly the bytes named `sha` (`size` long).
fn holds(path: &Path, sha: &str, size: usize) -> bool {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == size as u64 => {
            fs::read(path).is_ok_and(|data| sha256_hex(&data) == sha)
        }
        _ => false,
    }
}

/// Store `bytes` as a blob under `folder` (temp files are named `temp_prefix`…); its sha256.
pub fn store(folder: &Path, bytes: &[u8], temp_prefix: &str) -> io::Result<String> {
    let sha = sha256_hex(bytes);
    let path = blob_path(folder, &sha);
    if holds(&path, &sha, bytes.len()) {
        return Ok(sha);
    }
    let shard = path.parent().unwrap_or(folder);
    fs::create_dir_all(shard)?;
    let tmp = shard.join(format!(
        "{temp_prefix}{}-{:016x}",
        std::process::id(),
        crate::write::unique_random()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "artpipe-blobs-{}-{:016x}-{name}",
            std::process::id(),
            crate::write::unique_random()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_blob_is_named_by_its_hash_and_leaves_no_temp_file() {
        let dir = scratch("named");
        let sha = store(&dir, b"poster bytes", ".tmp-").unwrap();
        assert_eq!(sha, sha256_hex(b"poster bytes"));
        let path = blob_path(&dir, &sha);
        assert_eq!(fs::read(&path).unwrap(), b"poster bytes");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(&sha)]);
    }

    #[test]
    fn a_damaged_blob_is_written_again_and_a_good_one_kept() {
        let dir = scratch("damaged");
        let sha = store(&dir, b"fanart", ".tmp-").unwrap();
        let path = blob_path(&dir, &sha);
        fs::write(&path, b"fanarT").unwrap(); // same size, other bytes: bit rot
        store(&dir, b"fanart", ".tmp-").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"fanart");
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store(&dir, b"fanart", ".tmp-").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_an_error_and_no_temp_file() {
        let dir = scratch("blocked");
        let blocked = dir.join("blobs");
        fs::write(&blocked, b"a file where the folder goes").unwrap();
        assert!(store(&blocked, b"logo", ".tmp-").is_err());
        let names: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
