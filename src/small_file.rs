//! Reading the small files a configuration names: CA certificates and keys,
//! tokens, passwords, the configuration itself.
//!
//! Each is read with a size limit and only when it is a regular file (or a
//! symlink to one, as in a Kubernetes Secret volume), so that a mistyped path
//! (`/dev/zero`, a FIFO, a directory) is an error naming the file instead of
//! gigabytes of memory or a hang.

use std::io::Read;
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
}
