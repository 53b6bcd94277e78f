//! Remote URLs (`s3://BUCKET[/PREFIX]`, `file:///PATH`, `gs://…`, `az://…`) and the
//! `object_store` client each one gets. S3 settings come from the remote's stored endpoint and
//! region, else the standard `AWS_*` environment variables (credentials only from there).
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjPath;
use object_store::ObjectStore;

use crate::config::RemoteConfig;
use crate::error::{Result, TransferError};

/// How long one request may wait for a connection, and for an answer: an endpoint that is down
/// gives a clear error within seconds instead of a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Retries of a failed request, and the time they may take in all.
const MAX_RETRIES: usize = 2;
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a remote is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
    File { path: std::path::PathBuf },
}

impl Location {
    pub fn parse(url: &str) -> Result<Location> {
        let bad = |reason: &str| TransferError::BadUrl {
            url: url.into(),
            reason: reason.into(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(TransferError::UnknownScheme { url: url.into() });
        };
        let bucket_prefix = |rest: &str| -> Result<(String, String)> {
            let (b, p) = rest.split_once('/').unwrap_or((rest, ""));
            if b.is_empty() {
                return Err(bad("no bucket name"));
            }
            if b.contains('@') || b.contains(':') {
                return Err(bad(
                    "credentials and ports do not belong in the URL (use the AWS_* environment \
                     variables and the remote's endpoint)",
                ));
            }
            Ok((b.to_string(), p.trim_matches('/').to_string()))
        };
        match scheme {
            "s3" => {
                let (bucket, prefix) = bucket_prefix(rest)?;
                Ok(Location::S3 { bucket, prefix })
            }
            "gs" => {
                let (bucket, prefix) = bucket_prefix(rest)?;
                Ok(Location::Gcs { bucket, prefix })
            }
            "az" => {
                let (container, prefix) = bucket_prefix(rest)?;
                Ok(Location::Azure { container, prefix })
            }
            "file" => {
                let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
                let path = u
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path (file:///PATH)"))?;
                Ok(Location::File { path })
            }
            _ => Err(TransferError::UnknownScheme { url: url.into() }),
        }
    }
}

fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
}

fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
        ..Default::default()
    }
}

/// The client for a remote and the prefix of srlm's keys in it.
pub fn open(cfg: &RemoteConfig) -> Result<(Arc<dyn ObjectStore>, ObjPath)> {
    let url = &cfg.url;
    let storage = |e: object_store::Error| TransferError::Storage {
        url: url.clone(),
        what: "setting up the client".into(),
        detail: e.to_string(),
    };
    match Location::parse(url)? {
        Location::S3 { bucket, prefix } => {
            use object_store::aws::AmazonS3Builder;
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            if env("AWS_ACCESS_KEY_ID").is_none()
                && env("AWS_WEB_IDENTITY_TOKEN_FILE").is_none()
                && env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_none()
                && env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_none()
            {
                return Err(TransferError::NoCredentials { url: url.clone() });
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_client_options(client_options())
                .with_retry(retry());
            let endpoint = cfg
                .endpoint
                .clone()
                .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                .or_else(|| env("AWS_ENDPOINT_URL"));
            if let Some(ep) = endpoint {
                b = b
                    .with_allow_http(ep.starts_with("http://"))
                    .with_endpoint(ep);
            }
            let region = cfg
                .region
                .clone()
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"));
            if let Some(r) = region {
                b = b.with_region(r);
            }
            Ok((Arc::new(b.build().map_err(storage)?), ObjPath::from(prefix)))
        }
        Location::Gcs { bucket, prefix } => {
            let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_client_options(client_options())
                .with_retry(retry());
            Ok((Arc::new(b.build().map_err(storage)?), ObjPath::from(prefix)))
        }
        Location::Azure { container, prefix } => {
            let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_client_options(client_options())
                .with_retry(retry());
            Ok((Arc::new(b.build().map_err(storage)?), ObjPath::from(prefix)))
        }
        Location::File { path } => {
            std::fs::create_dir_all(&path).map_err(|e| TransferError::Storage {
                url: url.clone(),
                what: format!("creating {}", path.display()),
                detail: e.to_string(),
            })?;
            let fs =
                object_store::local::LocalFileSystem::new_with_prefix(&path).map_err(storage)?;
            Ok((Arc::new(fs), ObjPath::default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Location::parse("s3://b/some/prefix/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/r").unwrap(),
            Location::File {
                path: "/tmp/r".into()
            }
        );
        for bad in ["ftp://x", "/tmp/x", "http://host/b"] {
            assert!(
                matches!(
                    Location::parse(bad),
                    Err(TransferError::UnknownScheme { .. })
                ),
                "{bad}"
            );
        }
        assert!(Location::parse("s3://key:secret@b").is_err());
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("file://relative/x").is_err());
    }
}
