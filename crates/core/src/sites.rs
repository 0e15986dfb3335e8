//! Each app's static site, served at `/sites/{app}/`: files by path, their content types and
//! ETags, and which file answers a path (`index.html` for a folder).

use std::sync::Arc;

use cloudlet_store::{AppName, SiteFile, SitePut, SiteRoom, SiteStore, StoreError};
use sha2::{Digest, Sha256};

use crate::clock::Clock;

/// The largest file a site may hold.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;

/// How much each app's site may hold (`sites.*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteBounds {
    pub max_files: u64,
    pub max_bytes: u64,
}

impl Default for SiteBounds {
    fn default() -> Self {
        SiteBounds {
            max_files: 2_000,
            max_bytes: 512 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("invalid site path {0:?}: segments of A-Z, a-z, 0-9, `.`, `_` and `-`, no `.` or `..`")]
    InvalidPath(String),
    #[error("a site file is at most {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("a site holds at most {0} files")]
    TooManyFiles(u64),
    #[error("a site holds at most {0} bytes of files in all")]
    TooManyBytes(u64),
    #[error("no such file")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Sites(Arc<Inner>);

struct Inner {
    store: Arc<dyn SiteStore>,
    clock: Arc<dyn Clock>,
    bounds: SiteBounds,
}

impl Sites {
    pub fn new(store: Arc<dyn SiteStore>, clock: Arc<dyn Clock>, bounds: SiteBounds) -> Self {
        Sites(Arc::new(Inner {
            store,
            clock,
            bounds,
        }))
    }

    pub async fn files(&self, app: &AppName) -> Result<Vec<SiteFile>, SiteError> {
        Ok(self.0.store.site_files(app).await?)
    }

    /// Stores a file, or replaces the one at its path, if the site keeps within its bounds;
    /// its content type comes from its extension.
    pub async fn put(
        &self,
        app: &AppName,
        path: &str,
        content: Vec<u8>,
    ) -> Result<SiteFile, SiteError> {
        check_path(path)?;
        if content.len() > MAX_FILE_BYTES {
            return Err(SiteError::TooLarge);
        }
        let file = SiteFile {
            path: path.to_owned(),
            content_type: content_type(path).to_owned(),
            sha256: hex::encode(Sha256::digest(&content)),
            size: content.len() as i64,
            updated_at_ms: self.0.clock.now().unix_ms(),
        };
        let bounds = self.0.bounds;
        let room = SiteRoom {
            max_files: i64::try_from(bounds.max_files).unwrap_or(i64::MAX),
            max_bytes: i64::try_from(bounds.max_bytes).unwrap_or(i64::MAX),
        };
        match self
            .0
            .store
            .put_site_file(app, file.clone(), content, room)
            .await?
        {
            SitePut::Stored => Ok(file),
            SitePut::TooManyFiles => Err(SiteError::TooManyFiles(bounds.max_files)),
            SitePut::TooManyBytes => Err(SiteError::TooManyBytes(bounds.max_bytes)),
        }
    }

    pub async fn delete(&self, app: &AppName, path: &str) -> Result<(), SiteError> {
        check_path(path)?;
        if self.0.store.delete_site_file(app, path).await? {
            Ok(())
        } else {
            Err(SiteError::NotFound)
        }
    }

    /// The file that answers `path` (as requested, without the leading `/`) and its content:
    /// the file itself, or for a folder (`""`, `docs/`) its `index.html`.
    pub async fn serve(&self, app: &AppName, path: &str) -> Result<(SiteFile, Vec<u8>), SiteError> {
        self.0
            .store
            .site_file(app, &served_path(path)?)
            .await?
            .ok_or(SiteError::NotFound)
    }

    /// The file that answers `path`, as [`Sites::serve`] finds it, without its content.
    pub async fn find(&self, app: &AppName, path: &str) -> Result<SiteFile, SiteError> {
        self.0
            .store
            .site_file_info(app, &served_path(path)?)
            .await?
            .ok_or(SiteError::NotFound)
    }
}

/// The file that answers a request's `path`: for a folder, its `index.html`.
fn served_path(path: &str) -> Result<String, SiteError> {
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    check_path(&path).map_err(|_| SiteError::NotFound)?;
    Ok(path)
}

fn check_path(path: &str) -> Result<(), SiteError> {
    let valid = (1..=200).contains(&path.len())
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if valid {
        Ok(())
    } else {
        Err(SiteError::InvalidPath(path.to_owned()))
    }
}

/// The content type of a file, by extension.
pub fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_plain_relative_paths() {
        for good in ["index.html", "assets/app.js", "a-b_c.d/e.css"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/abs", "a//b", "../x", "a/./b", "a b", "a\\b", "%2e%2e/x", "x/",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert_eq!(content_type("a/App.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
