//! Object storage locations by URL, as checkpoints and file sources name them.
//!
//! Accepted: `s3://bucket/prefix` (endpoint, credentials and region from the standard
//! `AWS_*` environment variables, overridden by explicit options), `file:///abs/dir`,
//! and plain filesystem paths.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use sluice_common::error::{Result, SluiceError};

/// An object store and the key prefix a URL names in it.
pub struct ObjectLocation {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// For a local URL: the directory, canonicalized.
    pub local_dir: Option<PathBuf>,
}

/// Opens the location `url` names. `what` says what the URL is for, in errors
/// ("checkpoint store", "source path"). `options` are S3 settings (`object_store`'s
/// `AmazonS3ConfigKey` names such as `aws_endpoint`, `aws_region`); they are refused for
/// a local URL. A local directory is created when `create_dir` is set, and must exist
/// otherwise.
///
/// Fails with INVALID_PARAMETER_VALUE (22023) for a URL or option it cannot use, and
/// with an I/O error (58030) when the local directory cannot be created or found.
pub fn open_object_location(
    url: &str,
    what: &str,
    options: &[(String, String)],
    create_dir: bool,
) -> Result<ObjectLocation> {
    let invalid =
        |why: &str| SluiceError::invalid_parameter(format!("bad {what} URL \"{url}\": {why}"));
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("it names no bucket"));
        }
        let prefix = Path::parse(prefix).map_err(|e| invalid(&format!("bad key prefix: {e}")))?;
        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key.parse().map_err(|_| {
                SluiceError::invalid_parameter(format!(
                    "unknown S3 option \"{key}\" for {what} {url}"
                ))
            })?;
            builder = builder.with_config(key, value);
        }
        let store = builder
            .with_url(url)
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        return Ok(ObjectLocation {
            store: Arc::new(store),
            prefix,
            local_dir: None,
        });
    }
    let dir = if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(invalid(
                "a file:// URL needs an absolute path (file:///dir)",
            ));
        }
        PathBuf::from(rest)
    } else if url.contains("://") {
        return Err(invalid(
            "supported are file:///dir, s3://bucket/prefix and plain paths",
        ));
    } else if url.is_empty() {
        return Err(invalid("it is empty"));
    } else {
        PathBuf::from(url)
    };
    if let Some((key, _)) = options.first() {
        return Err(SluiceError::invalid_parameter(format!(
            "option \"{key}\" applies to S3 only, {what} {url} is a local directory"
        )));
    }
    if create_dir {
        std::fs::create_dir_all(&dir).map_err(|e| {
            SluiceError::io(format!("creating {what} directory {}", dir.display()), e)
        })?;
    }
    let root = std::fs::canonicalize(&dir)
        .map_err(|e| SluiceError::io(format!("resolving {what} directory {}", dir.display()), e))?;
    let store = LocalFileSystem::new_with_prefix(&root)
        .map_err(|e| invalid(&e.to_string()))?
        .with_automatic_cleanup(true);
    Ok(ObjectLocation {
        store: Arc::new(store),
        prefix: Path::ROOT,
        local_dir: Some(root),
    })
}
