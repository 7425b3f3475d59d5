//! Files only the service user may read (0600): credentials, keys, token lists.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What to do when the file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Leave it alone and fail with `AlreadyExists` (what it holds is in use elsewhere).
    Keep,
    /// Replace it atomically: write a temporary file beside it, then rename it over.
    Replace,
}

/// Write `bytes` to a new file at `path` with mode 0600 and sync it to disk.
pub fn write(path: &Path, bytes: &[u8], existing: Existing) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    let target = match existing {
        Existing::Keep => {
            options.create_new(true);
            path.to_path_buf()
        }
        Existing::Replace => {
            options.create(true).truncate(true);
            path.with_extension("tmp")
        }
    };
    let mut file = options.open(&target)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if existing == Existing::Replace {
        std::fs::rename(&target, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keep_refuses_an_existing_file_and_replace_swaps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        write(&path, b"one", Existing::Keep).unwrap();
        let e = write(&path, b"two", Existing::Keep).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write(&path, b"three", Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("tmp").exists());
    }
}
