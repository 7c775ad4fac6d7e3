//! `ikv bucket prepare`: what a bucket needs besides the objects ikv writes, set idempotently
//! (each piece is read first and written only when it differs; other rules and
//! notifications of the bucket are kept as they are):
//!
//! - a lifecycle rule, `ikv-abort-incomplete-uploads`, that aborts multipart uploads
//!   unfinished after a day under the root (a compactor killed mid-upload leaves parts that
//!   are billed as storage and never listed);
//! - with `notify`, an SNS topic `ikv-wake-<bucket>` that the bucket may publish to, and a
//!   notification, `ikv-wake`, of every PUT of a `wake.json` under the root to it: reader
//!   hosts that subscribe a queue of their own learn of a wake within a long poll.

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, Event, ExpirationStatus,
    FilterRule, FilterRuleName, LifecycleRule, LifecycleRuleFilter, NotificationConfiguration,
    NotificationConfigurationFilter, S3KeyFilter, TopicConfiguration,
};

use crate::{AwsError, Result, s3_client};

/// The lifecycle rule's id.
pub const LIFECYCLE_RULE: &str = "ikv-abort-incomplete-uploads";
/// The notification's id.
pub const NOTIFICATION: &str = "ikv-wake";
/// Days after which an unfinished multipart upload is aborted.
pub const ABORT_AFTER_DAYS: i32 = 1;

/// What `prepare_bucket` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Whether the lifecycle rule was written (false: it was already there, as it should be).
    pub lifecycle_written: bool,
    /// The topic readers subscribe to, when notifications were asked for.
    pub wake_topic: Option<String>,
    /// Whether the notification was written (false: already there).
    pub notification_written: bool,
}

/// The topic name for `bucket` (SNS names allow letters, digits, `-` and `_`).
pub fn topic_name(bucket: &str) -> String {
    let safe: String = bucket
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("ikv-wake-{safe}")
}

fn key_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// Prepares `bucket` for the ikv root at `prefix` (see the module).
pub async fn prepare_bucket(
    config: &aws_config::SdkConfig,
    bucket: &str,
    prefix: &str,
    notify: bool,
) -> Result<Prepared> {
    let s3 = s3_client(config);
    let lifecycle_written = lifecycle(&s3, bucket, prefix).await?;
    let (wake_topic, notification_written) = if notify {
        let topic = topic(config, bucket).await?;
        let written = notification(&s3, bucket, prefix, &topic).await?;
        (Some(topic), written)
    } else {
        (None, false)
    };
    Ok(Prepared {
        lifecycle_written,
        wake_topic,
        notification_written,
    })
}

async fn lifecycle(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<bool> {
    let doing = format!("setting the lifecycle rule of bucket {bucket}");
    let existing = match s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(got) => got.rules.unwrap_or_default(),
        Err(e)
            if e.as_service_error().and_then(|s| s.meta().code())
                == Some("NoSuchLifecycleConfiguration") =>
        {
            Vec::new()
        }
        Err(e) => {
            return Err(AwsError::new(
                &doing,
                aws_sdk_s3::error::DisplayErrorContext(e),
            ));
        }
    };
    let ours = LifecycleRule::builder()
        .id(LIFECYCLE_RULE)
        .status(ExpirationStatus::Enabled)
        .filter(
            LifecycleRuleFilter::builder()
                .prefix(key_prefix(prefix))
                .build(),
        )
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(ABORT_AFTER_DAYS)
                .build(),
        )
        .build()
        .map_err(|e| AwsError::new(&doing, e))?;
    let same = |r: &LifecycleRule| {
        r.id() == Some(LIFECYCLE_RULE)
            && r.status() == &ExpirationStatus::Enabled
            && r.filter().and_then(|f| f.prefix()).unwrap_or_default() == key_prefix(prefix)
            && r.abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation())
                == Some(ABORT_AFTER_DAYS)
    };
    if existing.iter().any(same) {
        return Ok(false);
    }
    let mut rules: Vec<LifecycleRule> = existing
        .into_iter()
        .filter(|r| r.id() != Some(LIFECYCLE_RULE))
        .collect();
    rules.push(ours);
    let configuration = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .map_err(|e| AwsError::new(&doing, e))?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(configuration)
        .send()
        .await
        .map_err(|e| AwsError::new(&doing, aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(true)
}

/// Creates (or finds: creation is idempotent) the topic and lets the bucket publish to it.
async fn topic(config: &aws_config::SdkConfig, bucket: &str) -> Result<String> {
    let sns = aws_sdk_sns::Client::new(config);
    let name = topic_name(bucket);
    let doing = format!("creating the SNS topic {name}");
    let arn = sns
        .create_topic()
        .name(&name)
        .send()
        .await
        .map_err(|e| AwsError::new(&doing, aws_sdk_sns::error::DisplayErrorContext(e)))?
        .topic_arn
        .ok_or_else(|| AwsError::new(&doing, "no topic ARN in the answer"))?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ikv-bucket-publishes-wakes",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "SNS:Publish",
            "Resource": arn,
            "Condition": {"ArnLike": {"aws:SourceArn": format!("arn:aws:s3:::{bucket}")}}
        }]
    });
    sns.set_topic_attributes()
        .topic_arn(&arn)
        .attribute_name("Policy")
        .attribute_value(policy.to_string())
        .send()
        .await
        .map_err(|e| {
            AwsError::new(
                format!("letting bucket {bucket} publish to {arn}"),
                aws_sdk_sns::error::DisplayErrorContext(e),
            )
        })?;
    Ok(arn)
}

async fn notification(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    topic: &str,
) -> Result<bool> {
    let doing = format!("setting the wake notification of bucket {bucket}");
    let current = s3
        .get_bucket_notification_configuration()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| AwsError::new(&doing, aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let rule =
        |name: FilterRuleName, value: String| FilterRule::builder().name(name).value(value).build();
    let ours = TopicConfiguration::builder()
        .id(NOTIFICATION)
        .topic_arn(topic)
        .events(Event::S3ObjectCreated)
        .filter(
            NotificationConfigurationFilter::builder()
                .key(
                    S3KeyFilter::builder()
                        .filter_rules(rule(FilterRuleName::Prefix, key_prefix(prefix)))
                        .filter_rules(rule(FilterRuleName::Suffix, "wake.json".into()))
                        .build(),
                )
                .build(),
        )
        .build()
        .map_err(|e| AwsError::new(&doing, e))?;
    let topics = current.topic_configurations().to_vec();
    let same = |t: &TopicConfiguration| {
        t.id() == Some(NOTIFICATION)
            && t.topic_arn() == topic
            && t.events()
                .iter()
                .any(|e| matches!(e, Event::S3ObjectCreated) || e.as_str() == "s3:ObjectCreated:*")
            && {
                let mut got: Vec<(String, String)> = t
                    .filter()
                    .and_then(|f| f.key())
                    .map(|k| {
                        k.filter_rules()
                            .iter()
                            .map(|r| {
                                (
                                    r.name().map_or("", |n| n.as_str()).to_ascii_lowercase(),
                                    r.value().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                got.sort();
                got == vec![
                    ("prefix".to_owned(), key_prefix(prefix)),
                    ("suffix".to_owned(), "wake.json".to_owned()),
                ]
            }
    };
    if topics.iter().any(same) {
        return Ok(false);
    }
    let mut topics: Vec<TopicConfiguration> = topics
        .into_iter()
        .filter(|t| t.id() != Some(NOTIFICATION))
        .collect();
    topics.push(ours);
    let configuration = NotificationConfiguration::builder()
        .set_topic_configurations(Some(topics))
        .set_queue_configurations(Some(current.queue_configurations().to_vec()))
        .set_lambda_function_configurations(Some(current.lambda_function_configurations().to_vec()))
        .set_event_bridge_configuration(current.event_bridge_configuration().cloned())
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(configuration)
        .send()
        .await
        .map_err(|e| AwsError::new(&doing, aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_valid_for_any_bucket_name() {
        assert_eq!(topic_name("my.bucket-1"), "ikv-wake-my-bucket-1");
        assert_eq!(key_prefix(""), "");
        assert_eq!(key_prefix("ikv"), "ikv/");
    }
}
