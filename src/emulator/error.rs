//! Azure's error envelope, in one place: every failure of a vault route becomes an [`ApiError`],
//! rendered as `{"error":{"code","message","innererror":{"code"}}}` with the status Azure uses.
//!
//! Codes and texts follow the recorded traffic in `azure-recordings/` where it shows them and
//! the Key Vault documentation otherwise.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::store::{Kind, StoreError};

/// Marks a response whose connection the server must drop without answering (fault injection).
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

/// One error answer of the data plane: status, Azure's `code`, an optional inner code, message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub inner: Option<String>,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
    /// Extra `WWW-Authenticate` challenge (401).
    pub challenge: Option<String>,
}

impl ApiError {
    /// An error with the given status, code and message and no inner error.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            inner: None,
            message: message.into(),
            retry_after: None,
            challenge: None,
        }
    }

    /// Adds `innererror.code`.
    pub fn with_inner(mut self, inner: impl Into<String>) -> Self {
        self.inner = Some(inner.into());
        self
    }

    /// Adds a `Retry-After` header.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 `BadParameter`.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// 400 `NotSupported`-style refusal of an operation the vault cannot do.
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "NotSupported", message)
    }

    /// 504 `RequestTimeout`: the backup of an object past the version limit ran out of time,
    /// as Azure's does. Azure's status and code for it are not recorded; 504 is what a
    /// gateway answers when the service behind it runs past its limit.
    pub fn backup_timed_out(kind: Kind, versions: usize) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "RequestTimeout",
            format!(
                "The operation timed out: backup of a {} with {versions} versions (more than {}) does not complete.",
                kind.noun(),
                super::store::MAX_BACKUP_VERSIONS
            ),
        )
    }

    /// 403 `Forbidden` with an inner code (`SecretDisabled`, `SecretManagedByKeyVault`, ...).
    pub fn forbidden(inner: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message).with_inner(inner)
    }

    /// 403 `Forbidden` + `ForbiddenByPolicy`: the caller's access policy lacks a permission.
    pub fn forbidden_by_policy(principal: &str, vault: &str, kind: Kind, permission: &str) -> Self {
        Self::forbidden(
            "ForbiddenByPolicy",
            format!(
                "The user, group or application 'appid={principal};oid={principal}' does not have {kind} {permission} permission on key vault '{vault};location=local'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                kind = kind.plural()
            ),
        )
    }

    /// 404 with the kind's code (`SecretNotFound`, `KeyNotFound`, `CertificateNotFound`).
    pub fn not_found(kind: Kind, name: &str, version: Option<&str>) -> Self {
        let what = match version {
            Some(v) if !v.is_empty() => format!("{name}/{v}"),
            _ => name.to_string(),
        };
        Self::new(
            StatusCode::NOT_FOUND,
            kind.not_found_code(),
            format!(
                "A {kind} with (name/id) {what} was not found in this key vault. If you recently deleted this {kind} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
                kind = kind.noun()
            ),
        )
    }

    /// 404 for a deleted object that is not (or not yet) in the deleted list.
    pub fn deleted_not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            kind.not_found_code(),
            format!("Deleted {} not found: {name}", kind.title()),
        )
    }

    /// 409 `Conflict` + `ObjectIsDeletedButRecoverable`.
    pub fn deleted_but_recoverable(kind: Kind, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "{} {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the {} can only be recovered or purged.",
                kind.title(),
                kind.noun()
            ),
        )
        .with_inner("ObjectIsDeletedButRecoverable")
    }

    /// 409 `Conflict` + `ObjectIsBeingDeleted`.
    pub fn being_deleted(kind: Kind, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("{} {name} is currently being deleted.", kind.title()),
        )
        .with_inner("ObjectIsBeingDeleted")
    }

    /// 400 `Malformed backup blob`, the recorded code (spaces included).
    pub fn malformed_backup() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Malformed backup blob",
            "Backup blob contains invalid or corrupt version.",
        )
    }

    /// 401 `Unauthorized` with a challenge header.
    pub fn unauthorized(message: impl Into<String>, challenge: String) -> Self {
        let mut err = Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message);
        err.challenge = Some(challenge);
        err
    }

    /// 500 for a failure inside the emulator itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            message,
        )
    }

    /// Maps a store failure on `kind`/`name` to Azure's answer.
    pub fn from_store(kind: Kind, name: &str, err: StoreError) -> Self {
        match err {
            StoreError::NotFound { version } => Self::not_found(kind, name, version.as_deref()),
            StoreError::DeletedNotFound => Self::deleted_not_found(kind, name),
            StoreError::DeletedButRecoverable => Self::deleted_but_recoverable(kind, name),
            StoreError::BeingDeleted => Self::being_deleted(kind, name),
            StoreError::PurgeProtected => Self::forbidden(
                "ForbiddenByPolicy",
                format!(
                    "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed. {} {name}",
                    kind.title()
                ),
            ),
            StoreError::RestoreConflict { version: id } => Self::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "There was a conflict restoring the {noun} '{id}'. This can happen if either: a second {noun} with the same name was created after the first {noun} was deleted; thus trying to restore a {noun} whose name is already in use. To fix this, rename the second {noun} to something else so that the restore works. The second probable cause of this exception is when multiple operations are performed in parallel against the {noun}. To avoid this error, perform operations against a {noun} in a sequential manner.",
                    noun = kind.noun()
                ),
            ),
            StoreError::TooManyVersions(n) => Self::backup_timed_out(kind, n),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(inner) = &self.inner {
            error["innererror"] = json!({ "code": inner });
        }
        let body = json!({ "error": error }).to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = &self.challenge
            && let Ok(value) = HeaderValue::from_str(challenge)
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
