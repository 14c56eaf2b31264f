//! The OpenAPI document (`GET /openapi.json`) and a browsable Swagger UI
//! (`GET /docs`).
//!
//! The document is generated from the code: every handler carries a
//! `#[utoipa::path]` next to its route attribute and every API module
//! exposes a `Doc` listing its handlers; [`openapi()`] nests them under the
//! prefix they are mounted at. Swagger UI's files are compiled into the
//! binary (`utoipa-swagger-ui`'s `vendored` feature): the page needs no
//! network.

// The `ToSchema`/`ToResponse` derives below write their fields' types
// with a path the module already imports.
#![expect(
    unused_qualifications,
    reason = "utoipa's derive output, not this code"
)]

use std::{path::PathBuf, sync::Arc};

use rocket::{
    Either, Request, Route, get,
    http::ContentType,
    response::{self, Responder, Response},
    routes,
};
use utoipa::{
    Modify, OpenApi, ToResponse, ToSchema,
    openapi::{
        self, Ref,
        path::{Operation, PathItem},
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

use crate::error::{ApiError, ApiResult};

/// Where the document is served; the UI loads it from here.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Every error: `{"error": {"code", "message"}}` (see `crate::error`).
#[derive(ToSchema)]
#[schema(as = Error)]
#[expect(dead_code, reason = "documents the shape crate::error writes")]
pub struct ErrorEnvelope {
    error: crate::error::ErrorBody,
}

/// Missing, malformed or expired token, or a token of the other audience
/// (an admin token on a POS route and the reverse).
#[derive(ToResponse)]
#[expect(dead_code, reason = "documentation only")]
pub struct Unauthorized(ErrorEnvelope);

/// The caller may not do this: `insufficient_role`, `tenant_mismatch` or
/// `merchant_suspended`.
#[derive(ToResponse)]
#[expect(dead_code, reason = "documentation only")]
pub struct Forbidden(ErrorEnvelope);

/// No such resource for this merchant (another merchant's id is a 404 too).
#[derive(ToResponse)]
#[expect(dead_code, reason = "documentation only")]
pub struct NotFound(ErrorEnvelope);

/// The request conflicts with the current state (the code says which).
#[derive(ToResponse)]
#[expect(dead_code, reason = "documentation only")]
pub struct Conflict(ErrorEnvelope);

/// Malformed JSON (`invalid_body`) or a value out of range
/// (`validation_failed`); the message names the field.
#[derive(ToResponse)]
#[expect(dead_code, reason = "documentation only")]
pub struct Invalid(ErrorEnvelope);

/// Temporarily unavailable (database down or busy); retry after the
/// number of seconds in `Retry-After`.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "seconds to wait before retrying")))]
#[expect(dead_code, reason = "documentation only")]
pub struct Unavailable(ErrorEnvelope);

/// The body could not be read, for instance because it is not UTF-8
/// (`bad_request`).
#[derive(ToResponse)]
#[expect(dead_code, reason = "documentation only")]
pub struct BadRequest(ErrorEnvelope);

/// Too many requests: login attempts (`too_many_attempts`), or the
/// merchant's `requestsPerMinute` used up for now (`rate_limited`, with the
/// limit in `error.details`); retry after the number of seconds in
/// `Retry-After`.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "seconds to wait before retrying")))]
#[expect(dead_code, reason = "documentation only")]
pub struct TooManyRequests(ErrorEnvelope);

/// The security schemes: staff and admin tokens are both HS256 JWT bearer
/// tokens, told apart by their audience.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = Some("JWT".into());
            http.description = Some(description.into());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "staff",
            bearer("Staff token from POST /api/v2/POS/auth/login (aud `posd`); the merchant comes from it"),
        );
        components.add_security_scheme(
            "admin",
            bearer("Platform operator token minted by `posd admin-token` (aud `posd-admin`)"),
        );
    }
}

/// Operations behind a rate limit of their own, as (method, path under
/// [`super::PREFIX`]); every operation for staff is behind the
/// merchant's ([`super::ratelimit`]).
const RATE_LIMITED: [(&str, &str); 1] = [("post", "/auth/login")];

/// Whether the operation takes a staff token.
fn for_staff(op: &Operation) -> bool {
    op.security.iter().flatten().any(|req| {
        serde_json::to_value(req)
            .ok()
            .is_some_and(|v| v.get("staff").is_some())
    })
}

/// The methods of a path and their operations.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

/// Responses that come from the shared request handling rather than from
/// a handler, added here once instead of in every `#[utoipa::path]`: 400
/// on every operation that reads a body (a body that is not UTF-8 is
/// refused before it is parsed), and 429 on every operation behind a rate
/// limit (staff operations and [`RATE_LIMITED`]). Applied to the whole document, after the
/// modules' paths are nested.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        for (path, item) in &mut doc.paths.paths {
            for (method, op) in operations(item) {
                let staff = for_staff(op);
                let responses = &mut op.responses.responses;
                if op.request_body.is_some() {
                    responses
                        .entry("400".into())
                        .or_insert_with(|| Ref::from_response_name("BadRequest").into());
                }
                let limited = staff
                    || RATE_LIMITED
                        .iter()
                        .any(|&(m, p)| m == method && path.strip_prefix(super::PREFIX) == Some(p));
                if limited {
                    responses
                        .entry("429".into())
                        .or_insert_with(|| Ref::from_response_name("TooManyRequests").into());
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "posd",
        description = "Hybrid multi-tenant point-of-sale backend. JSON is camelCase, times are RFC 3339 UTC, ids are UUIDs. Money is integer minor units (`...Minor` fields, in the merchant's currency): never floating point. Every error is `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&Security),
    components(
        schemas(ErrorEnvelope),
        responses(
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            Invalid,
            Unavailable,
            BadRequest,
            TooManyRequests
        )
    ),
    tags(
        (name = "operations", description = "Liveness and readiness"),
        (name = "auth", description = "Staff login"),
        (name = "catalog", description = "Categories and products"),
        (name = "inventory", description = "Stock levels and movements"),
        (name = "customers"),
        (name = "orders", description = "Sales, refunds and voids; writes need an `Idempotency-Key`"),
        (name = "reports"),
        (name = "offline", description = "Bills recorded while a till was offline"),
        (name = "staff", description = "Staff users (owner only)"),
        (name = "audit", description = "The merchant's audit trail: staff and operator actions (owner only)"),
        (name = "context", description = "The merchant's plan, limits and features, as a till reads them at start-up"),
        (name = "settings", description = "The merchant's settings and branding"),
        (name = "integrations", description = "The merchant's payment, email, accounting... integrations; credentials are write-only (owner only)"),
        (name = "admin", description = "Platform operators"),
    )
)]
struct ApiDoc;

/// The whole document: each module's paths under the prefix it is
/// mounted at (see [`super::routes`]), with the `SharedResponses`.
pub fn openapi() -> openapi::OpenApi {
    use super::{
        PREFIX, admin, audit, auth, categories, context, customers, domains, export, fleet, health,
        integrations, inventory, jobs, load, metrics, moves, offline, orders, plans, products,
        provisioning, reports, servers, settings, staff, usage,
    };
    let mut doc = ApiDoc::openapi()
        .merge_from(health::Doc::openapi())
        .merge_from(metrics::Doc::openapi())
        .nest(PREFIX, auth::Doc::openapi())
        .nest(PREFIX, products::Doc::openapi())
        .nest(PREFIX, categories::Doc::openapi())
        .nest(PREFIX, inventory::Doc::openapi())
        .nest(PREFIX, customers::Doc::openapi())
        .nest(PREFIX, orders::Doc::openapi())
        .nest(PREFIX, reports::Doc::openapi())
        .nest(PREFIX, offline::Doc::openapi())
        .nest(PREFIX, staff::Doc::openapi())
        .nest(PREFIX, audit::Doc::openapi())
        .nest(PREFIX, context::Doc::openapi())
        .nest(PREFIX, settings::Doc::openapi())
        .nest(PREFIX, integrations::Doc::openapi())
        .nest(PREFIX, plans::Doc::openapi())
        .nest(PREFIX, admin::Doc::openapi())
        .nest(PREFIX, domains::Doc::openapi())
        .nest(PREFIX, fleet::Doc::openapi())
        .nest(PREFIX, moves::Doc::openapi())
        .nest(PREFIX, provisioning::Doc::openapi())
        .nest(PREFIX, export::Doc::openapi())
        .nest(PREFIX, usage::Doc::openapi())
        .nest(PREFIX, load::Doc::openapi())
        .nest(PREFIX, jobs::Doc::openapi())
        .nest(PREFIX, servers::Doc::openapi());
    SharedResponses.modify(&mut doc);
    doc
}

/// Built per request: a few hundred microseconds, and never stale.
#[get("/openapi.json")]
fn document() -> ApiResult<(ContentType, String)> {
    let json = openapi().to_pretty_json().map_err(ApiError::internal)?;
    Ok((ContentType::JSON, json))
}

/// One file of Swagger UI.
struct File(utoipa_swagger_ui::SwaggerFile<'static>);

impl<'r> Responder<'r, 'static> for File {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let content_type =
            ContentType::parse_flexible(&self.0.content_type).unwrap_or(ContentType::Binary);
        let bytes = self.0.bytes.into_owned();
        Response::build()
            .header(content_type)
            .sized_body(bytes.len(), std::io::Cursor::new(bytes))
            .ok()
    }
}

fn swagger_file(path: &str) -> ApiResult<File> {
    let config = Arc::new(utoipa_swagger_ui::Config::from(OPENAPI_PATH));
    match utoipa_swagger_ui::serve(path, config) {
        Ok(Some(f)) => Ok(File(f)),
        Ok(None) => Err(ApiError::not_found("documentation file")),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Swagger UI's page. Its assets are relative links, so the page carries a
/// `<base>` pointing at `/docs/`: `/docs` works without a trailing slash.
fn page() -> ApiResult<(ContentType, String)> {
    let page = swagger_file("index.html")?;
    let html = String::from_utf8(page.0.bytes.into_owned()).map_err(ApiError::internal)?;
    let html = html.replacen("<head>", "<head>\n    <base href=\"/docs/\">", 1);
    Ok((ContentType::HTML, html))
}

#[get("/docs")]
fn ui() -> ApiResult<(ContentType, String)> {
    page()
}

#[get("/docs/<file..>")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "Rocket hands a route its segments by value"
)]
fn ui_file(file: PathBuf) -> ApiResult<Either<File, (ContentType, String)>> {
    match file.to_str() {
        None => Err(ApiError::not_found("documentation file")),
        Some("" | "index.html") => page().map(Either::Right),
        Some(path) => swagger_file(path).map(Either::Left),
    }
}

pub fn routes() -> Vec<Route> {
    routes![document, ui, ui_file]
}
