//! Mapping errors to HTTP responses with a JSON body naming the problem.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ikv_core::ErrorKind;

use super::api::{ErrorBody, ErrorResponse};

/// An error answer of the API: status, a stable machine code and a human message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn body_too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body is larger than {} bytes; split the batch",
                super::MAX_BODY_BYTES
            ),
        )
    }

    pub(crate) fn from_body_rejection(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large()
        } else {
            ApiError::new(status, "bad_body", rejection.body_text())
        }
    }
}

impl From<ikv_core::Error> for ApiError {
    fn from(e: ikv_core::Error) -> Self {
        let (status, code) = match (e.kind(), &e) {
            (ErrorKind::InvalidInput, ikv_core::Error::InvalidStoreName { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_store_name")
            }
            (ErrorKind::InvalidInput, ikv_core::Error::InvalidDocument(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_document")
            }
            (ErrorKind::InvalidInput, _) => (StatusCode::BAD_REQUEST, "invalid_operation"),
            (ErrorKind::StoreNotFound, _) => (StatusCode::NOT_FOUND, "store_not_found"),
            (ErrorKind::StoreExists, _) => (StatusCode::CONFLICT, "store_exists"),
            (ErrorKind::Closed, _) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            (ErrorKind::Storage, _) => {
                // The detail names server-side paths and endpoints: log it, do not send it.
                tracing::warn!(error = %e, "storage failed");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the bucket failed or could not be reached; retry later",
                );
            }
            (ErrorKind::NoAccess, _) => {
                // The writer's own credentials were refused: an operator must fix its role
                // or the bucket policy; the client cannot, and retrying will not help.
                tracing::error!(error = %e, "the bucket refused the writer's credentials");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_access_denied",
                    "the bucket refused the writer's credentials; its role or the bucket policy must be fixed",
                );
            }
            (ErrorKind::Corrupt, _) => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
            (_, _) => {
                tracing::error!(error = %e, "internal error");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                );
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The machine code of an error answer, carried on the response for the refusal counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let body = ErrorResponse {
            error: ErrorBody {
                code: code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}
