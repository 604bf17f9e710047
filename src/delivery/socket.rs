//! The Unix sockets the push deliveries serve on.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

/// Binds a Unix socket at `path` with `mode` and owner `uid`/`gid` from its
/// first instant: it is bound in a fresh private directory beside `path`,
/// given its mode and owner there, and renamed into place. A socket left at
/// `path` by an earlier run is replaced; anything else there is an error.
/// The parent directory is created when missing.
///
/// # Errors
/// The directory cannot be made, the path is taken by something that is not
/// a socket, or bind, chmod, chown or rename failed.
pub fn bind_unix(
    path: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<tokio::net::UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let private = parent.join(format!(".p{:06x}", fastrand::u32(..0x100_0000)));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&staged, uid, gid)?;
        }
        std::fs::rename(&staged, path)?;
        listener.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn a_socket_is_bound_with_its_mode_and_replaces_a_stale_one_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/sds.sock");
        let first = bind_unix(&path, 0o660, None, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        drop(first);
        // The socket of an earlier run is replaced.
        bind_unix(&path, 0o600, None, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("run")).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing is left beside it");
        // A file that is not a socket is not.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = bind_unix(&file, 0o600, None, None).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }
}
