//! The Unix-socket listener: mode 0660, a stale socket file replaced, removed on shutdown. When the
//! default path is not writable (no root on a laptop), it falls back to a per-user path and says so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::settings::DEFAULT_SOCKET_PATH;

/// A freshly bound socket and where its file is.
pub struct UnixSocket {
    pub listener: tokio::net::UnixListener,
    pub path: PathBuf,
}

/// Deletes the socket file when dropped (on shutdown).
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Resolves the socket path: explicit setting, else the default, else a per-user fallback.
pub fn socket_path(setting: Option<&str>) -> Option<(PathBuf, bool)> {
    match setting.map(str::trim) {
        Some("off" | "none" | "disabled" | "") => None,
        Some(path) => Some((PathBuf::from(path), true)),
        None => Some((PathBuf::from(DEFAULT_SOCKET_PATH), false)),
    }
}

/// A directory the current user can write, for sockets and logs when the system one is not.
pub fn user_runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("hooker");
    }
    std::env::temp_dir().join(format!("hooker-{}", nix::unistd::geteuid()))
}

/// The fallback socket path for a user who cannot write the default.
pub fn fallback_socket_path() -> PathBuf {
    user_runtime_dir().join("hooker.sock")
}

/// Binds `path` (0660). When `explicit` is false and the default cannot be used, falls back.
pub fn bind(path: &Path, explicit: bool) -> std::io::Result<UnixSocket> {
    match bind_at(path) {
        Ok(socket) => Ok(socket),
        Err(err)
            if !explicit
                && matches!(
                    err.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
        {
            let fallback = fallback_socket_path();
            tracing::warn!(default = %path.display(), fallback = %fallback.display(), error = %err, "Cannot use the default socket path; using a per-user one instead.");
            bind_at(&fallback)
        }
        Err(err) => Err(std::io::Error::new(
            err.kind(),
            format!("cannot bind Unix socket {}: {err}", path.display()),
        )),
    }
}

fn bind_at(path: &Path) -> std::io::Result<UnixSocket> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        // Someone is serving there: do not steal the socket.
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        Err(_) if path.exists() => {
            let metadata = std::fs::symlink_metadata(path)?;
            if std::os::unix::fs::FileTypeExt::is_socket(&metadata.file_type()) {
                std::fs::remove_file(path)?;
            } else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(UnixSocket {
        listener,
        path: path.to_path_buf(),
    })
}
