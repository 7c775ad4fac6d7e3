//! A client for the writer service's HTTP API (used by the demo, the tests and tools).

use ikv_core::{Operation, StoreConfig};

use crate::wire::{
    ACCOUNT_ID_HEADER, ErrorResponse, OperationJson, OperationsResponse, PASSKEY_HEADER,
};

/// Errors of [`HttpWriterClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error status.
    #[error("writer service answered {status} ({code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The request did not complete; whether it was committed is unknown.
    #[error("writer service request failed: {0}")]
    Transport(#[from] reqwest::Error),
}

/// Talks to one writer service as one account.
#[derive(Debug, Clone)]
pub struct HttpWriterClient {
    http: reqwest::Client,
    base_url: String,
    account_id: String,
    passkey: String,
}

impl HttpWriterClient {
    pub fn new(base_url: &str, account_id: &str, passkey: &str) -> Self {
        HttpWriterClient {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            account_id: account_id.to_owned(),
            passkey: passkey.to_owned(),
        }
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await?;
        let (code, message) = match serde_json::from_str::<ErrorResponse>(&text) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => ("unknown".to_owned(), text),
        };
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }

    /// Commits operations; returns once the service reports them durable.
    pub async fn write(
        &self,
        store: &str,
        ops: &[Operation],
    ) -> Result<OperationsResponse, ClientError> {
        let body = serde_json::json!({
            "operations": ops.iter().map(OperationJson::from_operation).collect::<Vec<_>>()
        });
        let response = self
            .http
            .post(format!("{}/v1/stores/{store}/operations", self.base_url))
            .header(ACCOUNT_ID_HEADER, &self.account_id)
            .header(PASSKEY_HEADER, &self.passkey)
            .json(&body)
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }

    /// The store's configuration.
    pub async fn describe(&self, store: &str) -> Result<StoreConfig, ClientError> {
        let response = self
            .http
            .get(format!("{}/v1/stores/{store}", self.base_url))
            .header(ACCOUNT_ID_HEADER, &self.account_id)
            .header(PASSKEY_HEADER, &self.passkey)
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }
}
