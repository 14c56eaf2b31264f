//! Domain errors as the API answers them: the one place where the errors
//! of [`crate::pos`], [`crate::tenancy::provisioning`] and
//! [`crate::tenancy::moves`] get a status and a
//! code. Their text is the message; a database error inside one answers as
//! any database error does (`From<diesel::result::Error> for ApiError`).

use rocket::http::Status;

use crate::{
    error::{ApiError, ErrorCode as C},
    pos::{RefundError, SaleError, pricing::TenderError},
    tenancy::{moves::MoveError, provisioning::ProvisionError, servers::ServerError},
};

/// 422 with `code`, the error's text as the message.
fn unprocessable(code: C, e: &impl std::fmt::Display) -> ApiError {
    ApiError::new(Status::UnprocessableEntity, code, e.to_string())
}

impl From<SaleError> for ApiError {
    fn from(e: SaleError) -> Self {
        use SaleError as E;
        match e {
            E::Db(e) => e.into(),
            E::Encode(e) => ApiError::internal(e),
            E::PriceOverrideForbidden { .. } | E::DiscountOverLimit { .. } => {
                ApiError::forbidden(C::PriceOverrideForbidden, e.to_string())
            }
            E::InsufficientStock { .. } => ApiError::conflict(C::InsufficientStock, e.to_string()),
            E::Invalid { .. } => unprocessable(C::ValidationFailed, &e),
            E::UnknownProduct { .. } => unprocessable(C::UnknownProduct, &e),
            E::ProductInactive { .. } => unprocessable(C::ProductInactive, &e),
            E::UnknownCustomer => unprocessable(C::UnknownCustomer, &e),
            E::Tender(ref t) => {
                let code = match t {
                    TenderError::Short { .. } => C::PaymentShort,
                    TenderError::Overpaid { .. } => C::Overpaid,
                    TenderError::Overflow => C::ValidationFailed,
                };
                unprocessable(code, &e)
            }
        }
    }
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        use RefundError as E;
        match e {
            E::Db(e) => e.into(),
            E::NoStockLevel(_) => ApiError::internal(e),
            E::OrderNotFound => ApiError::new(Status::NotFound, C::NotFound, e.to_string()),
            E::RefundOfVoided | E::AlreadyVoided => {
                ApiError::conflict(C::OrderVoided, e.to_string())
            }
            E::VoidOfRefunded => ApiError::conflict(C::OrderRefunded, e.to_string()),
            E::Settled => ApiError::conflict(C::OrderSettled, e.to_string()),
            E::LineListedTwice { .. } | E::NoSuchLine { .. } => {
                unprocessable(C::ValidationFailed, &e)
            }
            E::ExceedsQuantity { .. } => unprocessable(C::RefundExceedsQuantity, &e),
            E::AmountExceedsPaid { .. } | E::LinesExceedPaid { .. } | E::NothingLeft => {
                unprocessable(C::RefundExceedsPaid, &e)
            }
        }
    }
}

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> Self {
        use ProvisionError as E;
        match e {
            E::Db(e) => e.into(),
            E::Platform(e) => e,
            E::Connect(_) | E::RunVanished => ApiError::internal(e),
            E::MerchantNotFound => ApiError::new(Status::NotFound, C::NotFound, e.to_string()),
            E::SharedTarget | E::DatabaseUrlNotDedicated | E::ServerNotDedicated => {
                unprocessable(C::ValidationFailed, &e)
            }
            E::Server(e) => e.into(),
            E::InvalidDatabaseUrl(_) => unprocessable(C::InvalidDatabaseUrl, &e),
            E::RunIdMismatch { .. } => unprocessable(C::RunIdMismatch, &e),
            E::InProgress => ApiError::conflict(C::ProvisioningInProgress, e.to_string()),
            E::MoveInProgress { .. } => ApiError::conflict(C::MoveInProgress, e.to_string()),
            E::AlreadyProvisioned { .. } => {
                ApiError::conflict(C::AlreadyProvisioned, e.to_string())
            }
            E::TenantHasData { .. } => ApiError::conflict(C::TenantHasData, e.to_string()),
            E::NotProvisioned => ApiError::conflict(C::NotProvisioned, e.to_string()),
            E::ExportRequired { .. } => ApiError::conflict(C::ExportRequired, e.to_string()),
        }
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        use ServerError as E;
        match e {
            E::Db(e) => e.into(),
            E::Sealed(..) => ApiError::internal(e),
            E::Unknown(_) | E::InvalidName | E::InvalidUrl(_) | E::OutOfRange(..) => {
                unprocessable(C::ValidationFailed, &e)
            }
            E::Unreachable(_) => unprocessable(C::DatabaseUnreachable, &e),
            E::NotCreatedb(_) | E::NoAppRole(_) => {
                unprocessable(C::DatabasePrivilegesInsufficient, &e)
            }
            E::Draining(_) => ApiError::conflict(C::ServerDraining, e.to_string()),
            E::NameTaken(_) => ApiError::conflict(C::ServerNameTaken, e.to_string()),
        }
    }
}

impl From<MoveError> for ApiError {
    fn from(e: MoveError) -> Self {
        use MoveError as E;
        let message = e.to_string();
        match e {
            E::Db(e) => e.into(),
            E::UnknownMerchant | E::UnknownMove => {
                ApiError::new(Status::NotFound, C::NotFound, message)
            }
            E::AlreadyThere(_) => ApiError::conflict(C::AlreadyOnTier, message),
            E::UrlNeedsDedicated | E::ServerNeedsDedicated => {
                unprocessable(C::ValidationFailed, &message)
            }
            E::Server(e) => e.into(),
            E::InProgress(_) => ApiError::conflict(C::MoveInProgress, message),
            E::Provisioning => ApiError::conflict(C::ProvisioningInProgress, message),
            E::RunIdTaken(_) => unprocessable(C::RunIdMismatch, &message),
            E::NotMigrated => ApiError::conflict(C::TenantNotMigrated, message),
            E::NotCancellable(_) => ApiError::conflict(C::MoveNotCancellable, message),
            E::Refused(code, _) => unprocessable(code, &message),
            E::Failed {
                code: "database_unavailable",
                ..
            } => ApiError::unavailable(C::DatabaseUnavailable, message, 2),
            E::Failed { .. } => ApiError::internal(message),
        }
    }
}

/// 409 `plan_limit_reached`: a creation would take the merchant past
/// `kind`, whose value is `value`. 409 rather than 403: the request is
/// allowed to this caller and would succeed in another state of the
/// merchant (after a deletion, on another plan), as a taken sku would;
/// 403 is kept for who is asking (role, suspension, flags). Nothing is
/// truncated: the creation is refused whole.
pub fn plan_limit_reached(
    plan: &str,
    kind: crate::db::platform::plans::LimitKind,
    value: i64,
) -> ApiError {
    ApiError::conflict(
        C::PlanLimitReached,
        format!(
            "the merchant's limit {kind} = {value} (plan {plan}) is reached; delete some or ask for a higher limit"
        ),
    )
    .with_details(serde_json::json!({ "limit": kind.field(), "value": value, "plan": plan }))
}

/// Refuses a creation of catalogue or customer data once the merchant's
/// storage, as last measured, has reached its `maxStorageBytes`: 409
/// `plan_limit_reached`. Sales, refunds, offline bills and stock changes
/// are never refused for storage: a till keeps trading.
pub fn storage_room(ctx: &crate::tenancy::context::TenantContext) -> Result<(), ApiError> {
    match ctx.storage_full() {
        Some(max) => Err(plan_limit_reached(
            &ctx.plan.key,
            crate::db::platform::plans::LimitKind::MaxStorageBytes,
            max,
        )),
        None => Ok(()),
    }
}

/// 429 `rate_limited`: the merchant has used up its `requestsPerMinute`
/// (`value`, plan `plan`) for now; `wait` is how long until the next
/// request is taken, as `Retry-After` (whole seconds, at least 1).
pub fn rate_limited(plan: &str, value: i64, wait: std::time::Duration) -> ApiError {
    let kind = crate::db::platform::plans::LimitKind::RequestsPerMinute;
    let mut e = ApiError::new(
        Status::TooManyRequests,
        C::RateLimited,
        format!("the merchant's limit {kind} = {value} (plan {plan}) is used up for now; retry after the Retry-After seconds"),
    )
    .with_details(serde_json::json!({ "limit": kind.field(), "value": value, "plan": plan }));
    e.retry_after = Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1));
    e
}

/// 403 `feature_disabled`: `flag` is off for the merchant.
pub fn feature_disabled(flag: &str) -> ApiError {
    ApiError::forbidden(
        C::FeatureDisabled,
        format!("the feature {flag} is not enabled for this merchant"),
    )
    .with_details(serde_json::json!({ "feature": flag }))
}
