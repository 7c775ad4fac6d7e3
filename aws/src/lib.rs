//! What the object store library cannot do on AWS, kept out of every other crate (the SDK is
//! large): preparing a bucket for ikv (`prepare`: the lifecycle rule that aborts incomplete
//! multipart uploads, and S3 event notifications of the stores' wake signals to an SNS topic)
//! and a reader host's own queue on that topic (`wake_queue`), which tells it of a wake within
//! one long poll instead of a check every few seconds (rfcs/0009).
//!
//! Configuration comes from the same keys as a storage root's (`aws_endpoint`, `aws_region`,
//! `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`), then from the standard
//! `AWS_*` environment and profiles.

pub mod prepare;
pub mod wake_queue;

use ikv_core::StorageOptions;

/// Errors of an AWS call, naming what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {message}")]
pub struct AwsError {
    pub doing: String,
    pub message: String,
}

impl AwsError {
    pub(crate) fn new(doing: impl Into<String>, e: impl std::fmt::Display) -> AwsError {
        AwsError {
            doing: doing.into(),
            message: e.to_string(),
        }
    }
}

impl From<AwsError> for ikv_core::Error {
    fn from(e: AwsError) -> Self {
        ikv_core::Error::StorageMessage {
            context: e.doing,
            message: e.message,
        }
    }
}

pub type Result<T> = std::result::Result<T, AwsError>;

/// The SDK's configuration from a storage root's options (the same keys object_store reads),
/// the environment filling in the rest.
pub async fn sdk_config(options: &StorageOptions) -> aws_config::SdkConfig {
    let get = |key: &str| {
        options
            .options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = get("aws_region").or_else(|| get("region")) {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(endpoint) = get("aws_endpoint").or_else(|| get("endpoint")) {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(key), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            key,
            secret,
            get("aws_session_token"),
            None,
            "ikv storage options",
        ));
    }
    loader.load().await
}

/// An S3 client for `config` (path-style addressing when an endpoint was given: emulators).
pub(crate) fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = config.endpoint_url().is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build(),
    )
}

/// The bucket and key prefix of an `s3://bucket/prefix` root.
pub fn bucket_and_prefix(url: &str) -> Result<(String, String)> {
    let parsed = url::Url::parse(url).map_err(|e| AwsError::new(format!("reading {url}"), e))?;
    if !matches!(parsed.scheme(), "s3" | "s3a") {
        return Err(AwsError::new(
            format!("reading {url}"),
            "only an s3:// root is a bucket to prepare",
        ));
    }
    let bucket = parsed
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| AwsError::new(format!("reading {url}"), "no bucket name"))?;
    let prefix = parsed.path().trim_matches('/');
    Ok((bucket.to_owned(), prefix.to_owned()))
}
