//! Reading the small files a configuration names: CA certificates and keys,
//! tokens, passwords, the configuration itself; and writing one small file
//! of pillion's own in place ([`write_atomically`]).
//!
//! Each is read with a size limit and only when it is a regular file (or a
//! symlink to one, as in a Kubernetes Secret volume), so that a mistyped path
//! (`/dev/zero`, a FIFO, a directory) is an error naming the file instead of
//! gigabytes of memory or a hang.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest file read: far above any real CA bundle, token or
/// configuration (the system CA bundle is about 200 KiB).
pub const MAX_SIZE: u64 = 4 << 20;

/// Reads `path` whole.
///
/// # Errors
/// The file cannot be opened or read, is not a regular file, or is larger
/// than [`MAX_SIZE`]; the error says which.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer. It changes nothing for a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, device, FIFO or socket)",
        ));
    }
    if meta.len() > MAX_SIZE {
        return Err(too_large());
    }
    read_bounded(file, meta.len() as usize)
}

/// Reads to the end, but never more than one byte past [`MAX_SIZE`]: a
/// file's size may grow after it was checked, and a pipe has none.
fn read_bounded(file: std::fs::File, expected: usize) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(expected);
    file.take(MAX_SIZE + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_SIZE {
        return Err(too_large());
    }
    Ok(data)
}

/// Reads `path` whole as UTF-8.
///
/// # Errors
/// As [`read`], or the content is not UTF-8.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    utf8(read(path)?)
}

/// Reads `path` whole as UTF-8, whatever kind of file it is, up to
/// [`MAX_SIZE`]: for the configuration, which may come from a pipe
/// (`--config /dev/stdin`, `--config <(envsubst < pillion.yaml)`).
///
/// # Errors
/// The file cannot be opened or read, is larger than [`MAX_SIZE`], or is
/// not UTF-8.
pub fn read_stream_to_string(path: &Path) -> std::io::Result<String> {
    utf8(read_bounded(std::fs::File::open(path)?, 0)?)
}

fn utf8(data: Vec<u8>) -> std::io::Result<String> {
    String::from_utf8(data).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text",
        )
    })
}

fn too_large() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "larger than {} MiB, the limit for such a file",
            MAX_SIZE >> 20
        ),
    )
}

/// Writes `data` to `path` whole or not at all: into `.<name>.tmp` beside it,
/// created with `mode` (never looser, even for an instant), synced, then
/// renamed over `path`. A failure (a full disk) leaves no temporary file.
///
/// # Errors
/// Creating, writing, syncing or renaming failed.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(data)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_without_reading() {
        assert!(read(Path::new("/dev/zero")).is_err());
        assert!(read(Path::new("/")).is_err());
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        // Would block forever without O_NONBLOCK.
        assert!(read(&fifo).is_err());
    }

    #[test]
    fn files_over_the_limit_are_refused_and_small_ones_read() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_SIZE + 1)
            .unwrap();
        let e = read(&big).unwrap_err();
        assert!(e.to_string().contains("MiB"), "{e}");
        let small = tmp.path().join("small");
        std::fs::write(&small, "ok").unwrap();
        assert_eq!(read_to_string(&small).unwrap(), "ok");
    }

    #[test]
    fn a_write_replaces_the_file_whole_with_its_mode_and_leaves_nothing_beside_it() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notes.json");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // A directory where the file should be: the rename fails, the temporary file goes.
        let dir = tmp.path().join("taken");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("x"), "x").unwrap();
        assert!(write_atomically(&dir, b"data", 0o600).is_err());
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
