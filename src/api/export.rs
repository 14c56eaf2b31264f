//! `GET /admin/tenants/{id}/export`: a merchant's complete data plane,
//! whatever its tier, as one JSON document. Each export is recorded in the
//! control plane (deprovisioning requires one) and in the admin audit.
//!
//! The document is built in one statement (one consistent snapshot) and in
//! memory: for merchants with millions of rows, `pg_dump` of their schema or
//! database is the better tool.

use chrono::{DateTime, Utc};
use rocket::{
    Request, Route, State, get,
    http::Header,
    response::{self, Responder},
    routes,
    serde::json::Json,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::MerchantId,
        platform::{audit, exports::TenantExport, merchants::Merchant},
    },
    error::{ApiError, ApiResult},
    tenancy::{Tier, classification, placement::Placement, tenant_db::TenantDb},
};

/// A merchant's data plane, offered as a file
/// (`Content-Disposition: attachment`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(
    clippy::struct_field_names,
    reason = "the field names are the JSON keys"
)]
struct Export {
    merchant_id: MerchantId,
    slug: String,
    tier: Tier,
    schema_version: Option<String>,
    exported_at: DateTime<Utc>,
    export_id: uuid::Uuid,
    /// `{table: [row, ...]}`; rows as stored, columns in `snake_case`.
    #[schema(value_type = BTreeMap<String, Vec<Object>>)]
    tables: Value,
}

/// The export, offered as a file.
struct Download(Export);

impl<'r> Responder<'r, 'static> for Download {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let name = format!(
            "attachment; filename=\"posd-export-{}-{}.json\"",
            self.0.slug,
            self.0.exported_at.format("%Y%m%dT%H%M%SZ")
        );
        let mut res = Json(self.0).respond_to(req)?;
        res.set_header(Header::new("Content-Disposition", name));
        Ok(res)
    }
}

#[utoipa::path(get, path = "/admin/tenants/{id}/export", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The merchant's data, every table", body = Export),
        (status = 401, response = super::docs::Unauthorized),
        (status = 404, response = super::docs::NotFound),
        (status = 503, response = super::docs::Unavailable),
    ))]
#[get("/admin/tenants/<id>/export")]
async fn export(admin: PlatformAdmin, app: &State<App>, id: MerchantId) -> ApiResult<Download> {
    let m = app
        .platform(move |p| Merchant::find(p, id).map_err(ApiError::or_not_found("merchant")))
        .await?;
    // Where the data really is, whatever the kill switch says.
    let placement = std::sync::Arc::new(Placement::from_merchant(&m));
    let db = TenantDb::for_placement(app, placement).await?;
    let (tables, schema_version) = db
        .run(|tx| {
            Ok((
                crate::db::tenant::export::tables(tx, classification::TENANT)?,
                tx.schema_version()?,
            ))
        })
        .await?;
    let (tier, operator) = (m.tier, admin.operator);
    let record = app
        .platform(move |p| {
            p.transaction(|p| {
                let r = TenantExport::record(p, id, tier, &operator)?;
                audit::record(
                    p,
                    &operator,
                    "tenant.export",
                    Some(id),
                    json!({ "export": r.id, "tier": tier }),
                )?;
                Ok(r)
            })
        })
        .await?;
    tracing::info!(merchant = %id, export = %record.id, "tenant exported");
    Ok(Download(Export {
        merchant_id: m.id,
        slug: m.slug,
        tier: m.tier,
        schema_version,
        exported_at: record.created_at,
        export_id: record.id,
        tables,
    }))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(export))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![export]
}
