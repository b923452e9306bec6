//! [`MatrixError`]: a Matrix-style error response `{"errcode": "...", "error": "..."}`.
//!
//! Client errors (4xx) carry their message to the client unchanged. Server errors (5xx) carry only
//! a generic public message; the internal cause (if any) is logged once, at `error` level, when the
//! response is built — so it lands inside the request's tracing span and never in a client body.

use std::{borrow::Cow, fmt};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// A Matrix-style error with HTTP status, `errcode`, public message and optional internal cause.
#[derive(Debug)]
pub struct MatrixError {
    status: StatusCode,
    errcode: Cow<'static, str>,
    message: Cow<'static, str>,
    internal: Option<String>,
}

// === impl MatrixError ===

impl MatrixError {
    /// An error with the given status, `errcode` and public message.
    pub fn new(
        status: StatusCode,
        errcode: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            errcode: errcode.into(),
            message: message.into(),
            internal: None,
        }
    }

    /// 403 `M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    /// 413 `M_TOO_LARGE`.
    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", message)
    }

    /// 400 `M_UNKNOWN`, e.g. for a request body that broke off.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
    }

    /// 404 `M_UNRECOGNIZED` for unknown endpoints.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// 500 `M_UNKNOWN` with a generic message; `cause` is only logged.
    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        )
        .with_internal(cause)
    }

    /// Attaches an internal cause: logged once when the response is built, never sent.
    pub fn with_internal(mut self, cause: impl fmt::Display) -> Self {
        self.internal = Some(cause.to_string());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The Matrix `errcode`.
    pub fn errcode(&self) -> &str {
        &self.errcode
    }

    /// The public message (what the client sees).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )?;
        if let Some(internal) = &self.internal {
            write!(f, " ({internal})")?;
        }
        Ok(())
    }
}

impl std::error::Error for MatrixError {}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(
                status = self.status.as_u16(),
                errcode = %self.errcode,
                cause = self.internal.as_deref().unwrap_or("-"),
                "{}",
                self.message
            );
        } else if let Some(internal) = &self.internal {
            tracing::debug!(status = self.status.as_u16(), errcode = %self.errcode, cause = %internal, "client error");
        }
        // Serialised straight from the borrowed fields: no intermediate `serde_json::Value`
        // (a map and two string copies per response; the gate sends one per denial).
        (
            self.status,
            Json(Body {
                errcode: &self.errcode,
                error: &self.message,
            }),
        )
            .into_response()
    }
}

/// The wire form of a [`MatrixError`].
#[derive(Serialize)]
struct Body<'a> {
    errcode: &'a str,
    error: &'a str,
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn render(err: MatrixError) -> (u16, String) {
        let res = err.into_response();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn bodies() {
        let cases = [
            (
                MatrixError::forbidden("no"),
                403,
                r#"{"errcode":"M_FORBIDDEN","error":"no"}"#,
            ),
            (
                MatrixError::too_large("big"),
                413,
                r#"{"errcode":"M_TOO_LARGE","error":"big"}"#,
            ),
            (
                MatrixError::internal("db password wrong at /etc/secret"),
                500,
                r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#,
            ),
            (
                MatrixError::new(StatusCode::SERVICE_UNAVAILABLE, "GOVMX_X", "try later")
                    .with_internal("10.0.0.1 refused"),
                503,
                r#"{"errcode":"GOVMX_X","error":"try later"}"#,
            ),
        ];
        for (err, status, body) in cases {
            assert_eq!(render(err).await, (status, body.to_owned()));
        }
    }
}
