//! Profile pictures: content sniffing, streamed storage under `<data_dir>/pictures`, replacement.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::PeopleError;
use crate::db::users::{Blob, UserId};
use crate::db::{self, Db, DbError};

/// The image type judged by the first bytes, whatever the upload claims.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if head.len() >= 12 && &head[4..8] == b"ftyp" {
        match &head[8..12] {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                Some("image/heic")
            }
            b"avif" | b"avis" => Some("image/avif"),
            _ => None,
        }
    } else {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("picture is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    NotAnImage(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An upload in progress: bytes go to a temporary file as they arrive, never all into memory.
pub struct Upload {
    dir: PathBuf,
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    head: Vec<u8>,
    size: usize,
    limit: usize,
    hasher: Sha256,
}

const HEAD_BYTES: usize = 32;

impl Upload {
    pub async fn begin(dir: &Path, limit: usize) -> Result<Upload, UploadError> {
        tokio::fs::create_dir_all(dir).await?;
        let tmp = dir.join(format!(".upload-{}", crate::secret::new_secret()));
        // Pictures are the users' own: readable by the service user only (docs/hardening.md).
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .await?;
        Ok(Upload {
            dir: dir.to_path_buf(),
            tmp,
            file: Some(file),
            head: Vec::with_capacity(HEAD_BYTES),
            size: 0,
            limit,
            hasher: Sha256::new(),
        })
    }

    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.size += chunk.len();
        if self.size > self.limit {
            return Err(UploadError::TooLarge(self.limit));
        }
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            if self.head.len() >= 12 && sniff(&self.head).is_none() {
                return Err(UploadError::NotAnImage(
                    "file is not a JPEG, PNG, GIF, WebP or HEIC image".into(),
                ));
            }
        }
        self.hasher.update(chunk);
        if let Some(f) = self.file.as_mut() {
            f.write_all(chunk).await?;
        }
        Ok(())
    }

    /// Sync the file to disk and move it to its final, unguessable name.
    pub async fn finish(mut self) -> Result<Blob, UploadError> {
        let content_type = sniff(&self.head).ok_or_else(|| {
            UploadError::NotAnImage("file is not a JPEG, PNG, GIF, WebP or HEIC image".into())
        })?;
        let file = self.file.take().expect("file open until finish");
        file.sync_all().await?;
        drop(file);
        let key = crate::secret::new_secret();
        tokio::fs::rename(&self.tmp, self.dir.join(&key)).await?;
        let digest = std::mem::take(&mut self.hasher).finalize();
        Ok(Blob {
            key,
            content_type: content_type.to_string(),
            byte_size: self.size as i64,
            sha256: crate::secret::hex(&digest),
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Abandoned (too large, not an image, client went away): remove the partial file.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Make `blob` the user's picture and delete the file of the picture it replaces.
pub async fn set_picture(db: &Db, dir: &Path, user: UserId, blob: Blob) -> Result<(), PeopleError> {
    let key = blob.key.clone();
    let result = db
        .write(move |c| db::users::replace_picture(c, user, &blob))
        .await;
    match result {
        Ok(Some(old)) => {
            if let Err(e) = tokio::fs::remove_file(dir.join(&old)).await {
                log::warn!("could not remove replaced picture {old}: {e}");
            }
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            let _ = tokio::fs::remove_file(dir.join(&key)).await;
            Err(PeopleError::Db(e))
        }
    }
}

/// A stored picture's metadata and file path, if the key is known.
pub async fn open(db: &Db, dir: &Path, key: String) -> Result<Option<(Blob, PathBuf)>, DbError> {
    // Keys are base64url; anything else cannot name a file of ours.
    if key.is_empty()
        || key.len() > 64
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(None);
    }
    let path = dir.join(&key);
    Ok(db
        .read(move |c| db::users::blob(c, &key))
        .await?
        .map(|b| (b, path)))
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a......"), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0"), Some("image/heic"));
        assert_eq!(sniff(b"this is not an image"), None);
    }
}
