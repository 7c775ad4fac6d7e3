//! A reader host's own queue on the bucket's wake topic (`crate::prepare`): created and
//! subscribed when the host's owner starts, long-polled (one request per 20 s when nothing
//! happens), removed when it stops. An SQS queue hands each message to one consumer, so each
//! host has its own; the topic fans a wake out to all of them.
//!
//! A host that dies without closing leaves its queue and subscription behind: messages in it
//! expire after a minute and an idle queue costs nothing; `ikv bucket prepare` does not remove
//! them (their names start `ikv-wake-`).

use std::time::Duration;

use crate::{AwsError, Result};

/// The longest wait SQS allows a receive.
const LONG_POLL: i32 = 20;

/// A subscribed queue.
#[derive(Debug)]
pub struct WakeQueue {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    url: String,
    subscription: String,
}

impl WakeQueue {
    /// Creates a queue that `topic` may send to and subscribes it (raw delivery).
    pub async fn open(config: &aws_config::SdkConfig, topic: &str) -> Result<WakeQueue> {
        let sqs = aws_sdk_sqs::Client::new(config);
        let sns = aws_sdk_sns::Client::new(config);
        let name = format!("ikv-wake-{}", uuid::Uuid::new_v4().simple());
        let doing = format!("creating the wake queue {name}");
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod,
                "60",
            )
            .send()
            .await
            .map_err(|e| AwsError::new(&doing, aws_sdk_sqs::error::DisplayErrorContext(e)))?
            .queue_url
            .ok_or_else(|| AwsError::new(&doing, "no queue URL in the answer"))?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| AwsError::new(&doing, aws_sdk_sqs::error::DisplayErrorContext(e)))?
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .ok_or_else(|| AwsError::new(&doing, "no queue ARN"))?;
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic}}
            }]
        });
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::Policy,
                policy.to_string(),
            )
            .send()
            .await
            .map_err(|e| AwsError::new(&doing, aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let subscription = sns
            .subscribe()
            .topic_arn(topic)
            .protocol("sqs")
            .endpoint(&arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| {
                AwsError::new(
                    format!("subscribing {name} to {topic}"),
                    aws_sdk_sns::error::DisplayErrorContext(e),
                )
            })?
            .subscription_arn
            .unwrap_or_default();
        tracing::info!(queue = %url, topic, "wake queue subscribed");
        Ok(WakeQueue {
            sqs,
            sns,
            url,
            subscription,
        })
    }

    /// Waits up to 20 s for wakes; returns how many arrived (removed from the queue) and how
    /// many requests that took (a receive, and a delete when any arrived).
    pub async fn receive(&self) -> Result<(usize, u64)> {
        let doing = format!("receiving from {}", self.url);
        let got = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .wait_time_seconds(LONG_POLL)
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|e| AwsError::new(&doing, aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let messages = got.messages.unwrap_or_default();
        if !messages.is_empty() {
            let mut batch = self.sqs.delete_message_batch().queue_url(&self.url);
            for (i, m) in messages.iter().enumerate() {
                if let Some(handle) = m.receipt_handle() {
                    batch = batch.entries(
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()
                            .map_err(|e| AwsError::new(&doing, e))?,
                    );
                }
            }
            // Unremoved messages come back after the visibility timeout: one more wake.
            if let Err(e) = batch.send().await {
                tracing::debug!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "wake messages not removed");
            }
            return Ok((messages.len(), 2));
        }
        Ok((0, 1))
    }

    /// Unsubscribes and removes the queue.
    pub async fn close(self) {
        if let Err(e) = self
            .sns
            .unsubscribe()
            .subscription_arn(&self.subscription)
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_sns::error::DisplayErrorContext(e), "the wake queue's subscription was not removed");
        }
        if let Err(e) = self.sqs.delete_queue().queue_url(&self.url).send().await {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "the wake queue was not removed");
        }
    }
}

/// The wake queues that exist (hosts running, or gone without closing theirs), by URL.
pub async fn queues(config: &aws_config::SdkConfig) -> Result<Vec<String>> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let mut urls = sqs
        .list_queues()
        .queue_name_prefix("ikv-wake-")
        .send()
        .await
        .map_err(|e| {
            AwsError::new(
                "listing wake queues",
                aws_sdk_sqs::error::DisplayErrorContext(e),
            )
        })?
        .queue_urls
        .unwrap_or_default();
    urls.sort();
    Ok(urls)
}

/// Backoff after a failed receive.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
