//! The data directory and the secrets in it — the SQLite database holding the signing seeds
//! (with its WAL and shared-memory files) and the first-start API key files: created, and at
//! every start made private to the user running the authority (directory `0700`, files
//! `0600`), or the start is refused.

use std::path::Path;

use crate::apikeys::{ADMIN_KEY_FILE, SUBSCRIBER_KEY_FILE};
use crate::error::Error;
use crate::store::DB_FILE;

/// Make every file and directory this process creates from now on private to its user
/// (umask `077`). Process-wide, so the binary does it first thing; an embedder decides for
/// itself (what [`prepare`] and [`make_private`] do holds either way).
#[cfg(unix)]
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Create `dir` if needed (`0700`) and make it and the secrets already in it private: see
/// [`make_private`].
pub fn prepare(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| Error::Io {
        what: format!("cannot create data directory {}", dir.display()),
        source,
    })?;
    make_private(dir)
}

/// Make `dir` `0700` and the secrets in it that exist `0600` (`revocast.db`, its `-wal` and
/// `-shm`, `admin.key`, `subscriber.key`). An [`Error::Exposed`] naming the path and its mode
/// if another user can read or write one and it cannot be changed (it belongs to another
/// user, or lives on a file system that refuses). Called again once the store is open, for
/// the files SQLite created.
pub fn make_private(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        restrict(dir, 0o700)?;
        let wal = format!("{DB_FILE}-wal");
        let shm = format!("{DB_FILE}-shm");
        for name in [DB_FILE, &wal, &shm, ADMIN_KEY_FILE, SUBSCRIBER_KEY_FILE] {
            restrict(&dir.join(name), 0o600)?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Whether `dir` holds the embedded database: `keys list` and `keys revoke` refuse to create
/// an empty one in a mistyped directory.
pub fn has_database(dir: &Path) -> bool {
    dir.join(DB_FILE).is_file()
}

/// Give `path`, if it exists, exactly `mode`; refuse if that fails while others have access.
#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;

    let current = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                what: format!("cannot read the mode of {}", path.display()),
                source,
            });
        }
    };
    if current == mode {
        return Ok(());
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => Ok(()),
        // Only the owner has access: not what we asked for, but nothing is exposed.
        Err(_) if current & 0o077 == 0 => Ok(()),
        Err(source) => Err(Error::Exposed {
            what: format!(
                "{} is mode {current:04o}, open to other users, and cannot be made {mode:04o}",
                path.display()
            ),
            source,
        }),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_open_directory_and_database_are_tightened() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = dir.join(DB_FILE);
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn a_readable_secret_that_cannot_be_tightened_is_refused() {
        // procfs refuses every chmod, even root's: a world-readable file that stays so.
        let path = Path::new("/proc/self/status");
        if !path.exists() {
            eprintln!(
                "SKIPPED: no {} to stand for an unchangeable file",
                path.display()
            );
            return;
        }
        let Err(Error::Exposed { what: message, .. }) = restrict(path, 0o600) else {
            panic!("{} was not refused", path.display());
        };
        assert!(message.contains("/proc/self/status"), "{message}");
        assert!(message.contains("0444"), "{message}");
    }
}
