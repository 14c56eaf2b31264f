//! Integrations ([`crate::tenancy::integrations`]): a merchant's own (owner
//! only) under `/integrations`, the platform's defaults (operators) under
//! `/admin/integrations`. Credentials are write-only: an answer says
//! whether they are set and readable, their fingerprint and when they were
//! set, never a credential. Nothing here logs one: a body's credentials are
//! checked and sealed, and kept as a `SecretString` in between; a
//! validation message names the field, never quotes its value.

use rocket::{
    Route, State, delete, get, http::Status, patch, post, response::status::Custom, routes,
    serde::json::Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use super::{Body, docs, nullable};
use crate::{
    api::guards::{Owner, PlatformAdmin},
    app::App,
    crypto::Keyring,
    db::{
        ids::{IntegrationId, MerchantId},
        platform::{
            Platform, audit,
            integrations::{IntegrationChanges, IntegrationRow, NewIntegration, SealedCredentials},
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::integrations::{
        CredentialsStatus, Kind, MAX_CREDENTIAL_NAME, Source, check_credentials, check_provider,
        check_settings, credentials_status, seal,
    },
};

/// An integration as answered: no credential, only whether they are set
/// and readable, their fingerprint and when they were set.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct IntegrationView {
    id: IntegrationId,
    kind: Kind,
    provider: String,
    /// `merchant`: the merchant's own; `platform`: the platform's default,
    /// in effect for a kind the merchant has no integration of.
    source: Source,
    #[schema(value_type = Object)]
    settings: Value,
    credentials_status: CredentialsStatus,
    /// A keyed digest of the credentials (16 hex digits), to tell a change;
    /// null when none are set.
    credentials_fingerprint: Option<String>,
    credentials_set_at: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
struct IntegrationList {
    items: Vec<IntegrationView>,
}

/// A new integration. `settings` and `credentials` are read as any JSON
/// and checked after, so that no parse error can quote a credential.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateIntegration {
    kind: Kind,
    /// A lowercase slug naming the provider (`stripe`).
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", max_length = 64)]
    provider: String,
    /// An object of at most 16 KiB as JSON; `{}` when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    settings: Option<Value>,
    /// An object of non-empty strings (`{"apiKey": "..."}`), at most 8 KiB
    /// as JSON; write-only.
    #[serde(default)]
    #[schema(schema_with = credentials_schema)]
    credentials: Option<Value>,
}

/// Only the fields given change: `settings` and `credentials` are replaced
/// whole, `credentials: null` removes them. The kind does not change.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    clippy::option_option,
    reason = "PATCH: absent leaves a field, null removes the credentials"
)]
struct UpdateIntegration {
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", max_length = 64)]
    provider: Option<String>,
    /// Replaces the settings whole (`{}` clears them; null is refused).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Object)]
    settings: Option<Option<Value>>,
    /// Replaces the credentials whole; null removes them. Write-only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = nullable_credentials_schema)]
    credentials: Option<Option<Value>>,
}

/// Credentials as [`check_credentials`] takes them: at least one, each
/// named (1 to 64 characters, not blank) and a non-empty string.
fn credentials_schema() -> utoipa::openapi::Object {
    credentials_builder(
        utoipa::openapi::schema::Type::Object.into(),
        "An object of non-empty strings (`{\"apiKey\": \"...\"}`), at most 8 KiB as JSON; write-only.",
    )
}

fn nullable_credentials_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    credentials_builder(
        SchemaType::from_iter([Type::Object, Type::Null]),
        "Replaces the credentials whole; null removes them. Write-only.",
    )
}

fn credentials_builder(
    of: utoipa::openapi::schema::SchemaType,
    description: &str,
) -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, schema::Type};
    ObjectBuilder::new()
        .schema_type(of)
        .description(Some(description))
        .min_properties(Some(1))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_CREDENTIAL_NAME))
                .pattern(Some(r"\S")),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        ))
        .build()
}

fn provider(s: String) -> ApiResult<String> {
    check_provider(&s).map_err(|e| ApiError::invalid("provider", e))?;
    Ok(s)
}

fn settings(v: Value) -> ApiResult<Value> {
    let Value::Object(map) = v else {
        return Err(ApiError::invalid("settings", "must be an object"));
    };
    check_settings(&map).map_err(|e| ApiError::invalid("settings", e))?;
    Ok(Value::Object(map))
}

/// Checks credentials and seals them for integration `id` of `merchant`.
fn sealed(
    keyring: &Keyring,
    merchant: Option<MerchantId>,
    id: IntegrationId,
    v: Value,
) -> ApiResult<SealedCredentials> {
    let Value::Object(map) = v else {
        return Err(ApiError::invalid("credentials", "must be an object"));
    };
    let text = check_credentials(map).map_err(|(name, reason)| match name {
        Some(name) => ApiError::invalid(&format!("credentials.{name}"), reason),
        None => ApiError::invalid("credentials", reason),
    })?;
    seal(keyring, merchant, id, &text).map_err(ApiError::internal)
}

fn view(keyring: &Keyring, row: IntegrationRow) -> ApiResult<IntegrationView> {
    let kind = Kind::parse(&row.kind)
        .ok_or_else(|| ApiError::internal(format!("integration {}: unknown kind", row.id)))?;
    let credentials_status = credentials_status(keyring, &row);
    Ok(IntegrationView {
        id: row.id,
        kind,
        provider: row.provider,
        source: if row.merchant_id.is_some() {
            Source::Merchant
        } else {
            Source::Platform
        },
        settings: row.settings,
        credentials_status,
        credentials_fingerprint: row.credentials_fingerprint,
        credentials_set_at: row.credentials_set_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A unique violation is 409 `integration_kind_taken`, `NotFound` 404.
fn taken(e: diesel::result::Error) -> ApiError {
    ApiError::or_taken(
        "integration",
        ErrorCode::IntegrationKindTaken,
        "an integration of this kind exists: change it or delete it",
    )(e)
}

/// What the audit and the log say of an integration: never a credential.
fn summary(row: &IntegrationRow) -> Value {
    json!({
        "id": row.id, "kind": row.kind, "provider": row.provider,
        "credentialsFingerprint": row.credentials_fingerprint,
    })
}

/// Who makes a change: an owner (their merchant) or an operator (the
/// platform's defaults, audited).
#[derive(Clone)]
enum Actor {
    Owner(MerchantId),
    Operator(String),
}

impl Actor {
    fn merchant(&self) -> Option<MerchantId> {
        match self {
            Actor::Owner(m) => Some(*m),
            Actor::Operator(_) => None,
        }
    }

    /// Records a change in the admin audit (operators' only).
    fn audit(&self, p: &mut Platform<'_>, action: &str, row: &IntegrationRow) -> ApiResult<()> {
        if let Actor::Operator(operator) = self {
            audit::record(p, operator, action, None, summary(row))?;
        }
        Ok(())
    }
}

async fn list(app: &App, merchant: Option<MerchantId>) -> ApiResult<IntegrationList> {
    let keyring = app.settings.keyring.clone();
    app.platform(move |p| {
        let mut rows = IntegrationRow::list(p, merchant)?;
        if merchant.is_some() {
            // The platform's default of each kind the merchant lacks.
            let defaults = IntegrationRow::list(p, None)?;
            let missing: Vec<IntegrationRow> = defaults
                .into_iter()
                .filter(|d| !rows.iter().any(|r| r.kind == d.kind))
                .collect();
            rows.extend(missing);
            rows.sort_by(|a, b| a.kind.cmp(&b.kind));
        }
        let items = rows
            .into_iter()
            .map(|r| view(&keyring, r))
            .collect::<ApiResult<_>>()?;
        Ok(IntegrationList { items })
    })
    .await
}

async fn create(app: &App, actor: Actor, b: CreateIntegration) -> ApiResult<IntegrationView> {
    let keyring = app.settings.keyring.clone();
    let merchant = actor.merchant();
    let id = IntegrationId(uuid::Uuid::now_v7());
    let provider = provider(b.provider)?;
    let settings = settings(b.settings.unwrap_or_else(|| Value::Object(Map::new())))?;
    let credentials = b
        .credentials
        .map(|c| sealed(&keyring, merchant, id, c))
        .transpose()?;
    let row = app
        .platform(move |p| {
            p.transaction(|p| {
                let row = IntegrationRow::insert(
                    p,
                    NewIntegration {
                        id,
                        merchant_id: merchant,
                        kind: b.kind.as_str(),
                        provider: &provider,
                        settings,
                        credentials,
                    },
                )
                .map_err(taken)?;
                actor.audit(p, "integration.create", &row)?;
                Ok(row)
            })
        })
        .await?;
    tracing::info!(merchant = ?row.merchant_id, integration = %row.id, kind = %row.kind, provider = %row.provider, "integration created");
    view(&app.settings.keyring, row)
}

async fn update(
    app: &App,
    actor: Actor,
    id: IntegrationId,
    b: UpdateIntegration,
) -> ApiResult<IntegrationView> {
    let keyring = app.settings.keyring.clone();
    let merchant = actor.merchant();
    let changes = IntegrationChanges {
        provider: b.provider.map(provider).transpose()?,
        settings: b
            .settings
            .map(|v| settings(v.unwrap_or(Value::Null)))
            .transpose()?,
        credentials: b
            .credentials
            .map(|c| c.map(|c| sealed(&keyring, merchant, id, c)).transpose())
            .transpose()?,
    };
    let row = app
        .platform(move |p| {
            p.transaction(|p| {
                let row = IntegrationRow::update(p, merchant, id, changes)
                    .map_err(ApiError::or_not_found("integration"))?;
                actor.audit(p, "integration.update", &row)?;
                Ok(row)
            })
        })
        .await?;
    tracing::info!(merchant = ?row.merchant_id, integration = %row.id, kind = %row.kind, provider = %row.provider, "integration changed");
    view(&app.settings.keyring, row)
}

async fn remove(app: &App, actor: Actor, id: IntegrationId) -> ApiResult<Status> {
    let merchant = actor.merchant();
    let row = app
        .platform(move |p| {
            p.transaction(|p| {
                let row = IntegrationRow::delete(p, merchant, id)
                    .map_err(ApiError::or_not_found("integration"))?;
                actor.audit(p, "integration.delete", &row)?;
                Ok(row)
            })
        })
        .await?;
    tracing::info!(merchant = ?row.merchant_id, integration = %row.id, kind = %row.kind, "integration deleted");
    Ok(Status::NoContent)
}

/// The merchant's integrations, and the platform's default of each kind it
/// has none of (`source: "platform"`). Owner only.
#[utoipa::path(get, path = "/integrations", tag = "integrations", security(("staff" = [])),
    responses(
        (status = 200, body = IntegrationList),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/integrations")]
async fn list_integrations(owner: Owner<'_>, app: &State<App>) -> ApiResult<Json<IntegrationList>> {
    list(app, Some(owner.0.claims.mid)).await.map(Json)
}

/// A new integration of the merchant: one per kind (409
/// `integration_kind_taken`). Owner only.
#[utoipa::path(post, path = "/integrations", tag = "integrations", security(("staff" = [])),
    request_body = CreateIntegration,
    responses(
        (status = 201, body = IntegrationView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/integrations", data = "<body>")]
async fn create_integration(
    owner: Owner<'_>,
    app: &State<App>,
    body: Body<CreateIntegration>,
) -> ApiResult<Custom<Json<IntegrationView>>> {
    let v = create(app, Actor::Owner(owner.0.claims.mid), body.0).await?;
    Ok(Custom(Status::Created, Json(v)))
}

/// Changes one of the merchant's integrations. Owner only.
#[utoipa::path(patch, path = "/integrations/{id}", tag = "integrations", security(("staff" = [])),
    params(("id" = IntegrationId, Path)),
    request_body = UpdateIntegration,
    responses(
        (status = 200, body = IntegrationView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/integrations/<id>", data = "<body>")]
async fn update_integration(
    owner: Owner<'_>,
    app: &State<App>,
    id: IntegrationId,
    body: Body<UpdateIntegration>,
) -> ApiResult<Json<IntegrationView>> {
    update(app, Actor::Owner(owner.0.claims.mid), id, body.0)
        .await
        .map(Json)
}

/// Deletes one of the merchant's integrations; the platform's default of
/// its kind, if any, applies again. Owner only.
#[utoipa::path(delete, path = "/integrations/{id}", tag = "integrations", security(("staff" = [])),
    params(("id" = IntegrationId, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[delete("/integrations/<id>")]
async fn delete_integration(
    owner: Owner<'_>,
    app: &State<App>,
    id: IntegrationId,
) -> ApiResult<Status> {
    remove(app, Actor::Owner(owner.0.claims.mid), id).await
}

/// The platform's default integrations.
#[utoipa::path(get, path = "/admin/integrations", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, body = IntegrationList),
        (status = 401, response = docs::Unauthorized),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/admin/integrations")]
async fn list_default_integrations(
    _admin: PlatformAdmin,
    app: &State<App>,
) -> ApiResult<Json<IntegrationList>> {
    list(app, None).await.map(Json)
}

/// A platform default: in effect for every merchant without an integration
/// of its kind; one per kind (409 `integration_kind_taken`). Audited.
#[utoipa::path(post, path = "/admin/integrations", tag = "admin", security(("admin" = [])),
    request_body = CreateIntegration,
    responses(
        (status = 201, body = IntegrationView),
        (status = 401, response = docs::Unauthorized),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/admin/integrations", data = "<body>")]
async fn create_default_integration(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<CreateIntegration>,
) -> ApiResult<Custom<Json<IntegrationView>>> {
    let v = create(app, Actor::Operator(admin.operator), body.0).await?;
    Ok(Custom(Status::Created, Json(v)))
}

/// Changes a platform default. Audited.
#[utoipa::path(patch, path = "/admin/integrations/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = IntegrationId, Path)),
    request_body = UpdateIntegration,
    responses(
        (status = 200, body = IntegrationView),
        (status = 401, response = docs::Unauthorized),
        (status = 404, response = docs::NotFound),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/admin/integrations/<id>", data = "<body>")]
async fn update_default_integration(
    admin: PlatformAdmin,
    app: &State<App>,
    id: IntegrationId,
    body: Body<UpdateIntegration>,
) -> ApiResult<Json<IntegrationView>> {
    update(app, Actor::Operator(admin.operator), id, body.0)
        .await
        .map(Json)
}

/// Deletes a platform default. Audited.
#[utoipa::path(delete, path = "/admin/integrations/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = IntegrationId, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = docs::Unauthorized),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[delete("/admin/integrations/<id>")]
async fn delete_default_integration(
    admin: PlatformAdmin,
    app: &State<App>,
    id: IntegrationId,
) -> ApiResult<Status> {
    remove(app, Actor::Operator(admin.operator), id).await
}

#[derive(OpenApi)]
#[openapi(paths(
    list_integrations,
    create_integration,
    update_integration,
    delete_integration,
    list_default_integrations,
    create_default_integration,
    update_default_integration,
    delete_default_integration
))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![
        list_integrations,
        create_integration,
        update_integration,
        delete_integration,
        list_default_integrations,
        create_default_integration,
        update_default_integration,
        delete_default_integration
    ]
}
