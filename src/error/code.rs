//! The stable error codes: every `code` the API answers, one variant each.
//!
//! A code is part of the contract: clients branch on it, so a variant is
//! never renamed nor its meaning changed; new ones may be added. On the
//! wire a code is the variant in `snake_case` (`InsufficientRole` is
//! `insufficient_role`), which [`ErrorCode::as_str`] also gives.

use serde::Serialize;

/// Declares [`ErrorCode`] with [`ErrorCode::as_str`] and [`ErrorCode::ALL`]
/// from one list, so that a code cannot be added to one and not the others.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A stable, `snake_case` error code (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as the API writes it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    // The generic answer for a bare status (the catchers).
    BadRequest = "bad_request",
    Unauthorized = "unauthorized",
    Forbidden = "forbidden",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    PayloadTooLarge = "payload_too_large",
    UnsupportedMediaType = "unsupported_media_type",
    UnprocessableEntity = "unprocessable_entity",
    TooManyRequests = "too_many_requests",
    ServiceUnavailable = "service_unavailable",
    InternalError = "internal_error",
    /// A status no other code covers.
    Error = "error",

    // The request itself.
    /// A value out of its limits; the message starts with the field.
    ValidationFailed = "validation_failed",
    /// Malformed JSON, a wrong type or an unknown field.
    InvalidBody = "invalid_body",
    /// An offline bill that is not a valid bill (as `invalid_body`).
    InvalidBill = "invalid_bill",
    BillTooOld = "bill_too_old",
    /// The body names something that does not exist.
    InvalidReference = "invalid_reference",
    IdempotencyKeyRequired = "idempotency_key_required",
    IdempotencyKeyInUse = "idempotency_key_in_use",
    IdempotencyKeyReused = "idempotency_key_reused",

    // Who is asking.
    InvalidCredentials = "invalid_credentials",
    TooManyAttempts = "too_many_attempts",
    /// The merchant's `requestsPerMinute` is used up for now.
    RateLimited = "rate_limited",
    StaffInactive = "staff_inactive",
    StaffUnknown = "staff_unknown",
    /// The token's merchant is not the one the request names (by
    /// `X-Tenant-Id`, its host, or a login's `merchant` on a merchant's
    /// host).
    TenantMismatch = "tenant_mismatch",
    /// The request's host is neither the platform's nor a merchant's.
    UnknownHost = "unknown_host",
    MerchantSuspended = "merchant_suspended",
    InsufficientRole = "insufficient_role",

    // Uniqueness and the state of a resource.
    /// Another row already has these values.
    Conflict = "conflict",
    SkuTaken = "sku_taken",
    EmailTaken = "email_taken",
    SlugTaken = "slug_taken",
    CategoryNameTaken = "category_name_taken",
    UnknownCategory = "unknown_category",
    CannotChangeSelf = "cannot_change_self",
    LastOwner = "last_owner",
    InsufficientStock = "insufficient_stock",
    /// The merchant (or the platform) already has an integration of this
    /// kind.
    IntegrationKindTaken = "integration_kind_taken",
    /// Another merchant has registered this domain.
    DomainTaken = "domain_taken",

    // Plans and features.
    /// A creation would exceed a limit of the merchant's plan (or of its
    /// override); `details` names the limit and its value.
    PlanLimitReached = "plan_limit_reached",
    /// The capability is behind a feature flag that is off for this
    /// merchant; `details.feature` names it.
    FeatureDisabled = "feature_disabled",
    /// No plan with this key.
    UnknownPlan = "unknown_plan",
    /// A plan or a flag with this key exists.
    KeyTaken = "key_taken",

    // Sales, refunds and voids.
    PriceOverrideForbidden = "price_override_forbidden",
    UnknownProduct = "unknown_product",
    ProductInactive = "product_inactive",
    UnknownCustomer = "unknown_customer",
    PaymentShort = "payment_short",
    Overpaid = "overpaid",
    RefundExceedsPaid = "refund_exceeds_paid",
    RefundExceedsQuantity = "refund_exceeds_quantity",
    OrderVoided = "order_voided",
    OrderRefunded = "order_refunded",
    OrderSettled = "order_settled",

    // Provisioning and deprovisioning (the failed step's codes among them).
    InvalidDatabaseUrl = "invalid_database_url",
    ProvisioningInProgress = "provisioning_in_progress",
    RunIdMismatch = "run_id_mismatch",
    AlreadyProvisioned = "already_provisioned",
    TenantHasData = "tenant_has_data",
    NotProvisioned = "not_provisioned",
    ExportRequired = "export_required",
    ProvisioningFailed = "provisioning_failed",
    /// A failure injected by `POSD_PROVISION_FAIL_AFTER_STEP` (debug builds).
    InjectedFault = "injected_fault",
    DatabaseUnreachable = "database_unreachable",
    DatabaseCheckFailed = "database_check_failed",
    DatabaseVersionUnsupported = "database_version_unsupported",
    DatabaseRoleSuperuser = "database_role_superuser",
    DatabaseRoleBypassrls = "database_role_bypassrls",
    DatabasePrivilegesInsufficient = "database_privileges_insufficient",
    DatabaseNotEmpty = "database_not_empty",

    // Tier moves.
    AlreadyOnTier = "already_on_tier",
    MoveInProgress = "move_in_progress",
    /// The tenant's migrations are behind: migrate it, then move it.
    TenantNotMigrated = "tenant_not_migrated",
    MoveNotCancellable = "move_not_cancellable",
    /// A database the merchant brings already holds its schema, or a
    /// restore's merchant already has data.
    TargetNotEmpty = "target_not_empty",
    /// What a restore read is not a whole posd export.
    InvalidArchive = "invalid_archive",

    // Database servers.
    /// The server named is being drained: it takes no new database.
    ServerDraining = "server_draining",
    ServerNameTaken = "server_name_taken",

    // Background jobs.
    /// A job that is done cannot be retried: enqueue a new one.
    JobDone = "job_done",
    /// `POSD_EXPORT_DIR` is not set: exports are only streamed.
    ExportsNotConfigured = "exports_not_configured",
    /// The job is not a finished export, or its file is not on this
    /// instance.
    ExportFileMissing = "export_file_missing",

    // Temporarily unavailable (503 with `Retry-After`).
    /// A concurrent update won; retry.
    ConflictRetry = "conflict_retry",
    DatabaseUnavailable = "database_unavailable",
    DatabaseTimeout = "database_timeout",
    DatabaseBusy = "database_busy",
    ShuttingDown = "shutting_down",
    NotReady = "not_ready",
    TenantDatabaseUnavailable = "tenant_database_unavailable",
    TenantMigrating = "tenant_migrating",
    TenantMigrationFailed = "tenant_migration_failed",
    TenantUnclassifiedTable = "tenant_unclassified_table",
    /// The merchant's data has just moved to another placement: retry.
    TenantMoved = "tenant_moved",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// No such code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an error code")]
pub struct UnknownCode(String);

impl std::str::FromStr for ErrorCode {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Self, UnknownCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::ErrorCode;

    #[test]
    fn the_wire_form_is_as_str_and_reads_back() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), code);
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
        assert!("no_such_code".parse::<ErrorCode>().is_err());
    }
}
