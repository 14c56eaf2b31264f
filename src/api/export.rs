//! `GET /admin/tenants/{id}/export`: a merchant's complete data plane,
//! whatever its tier, as a posd archive (`tenancy::moves::archive`): one
//! consistent snapshot, streamed table by table, with a manifest of row
//! counts and checksums that `posd tenants restore` verifies. Each export
//! is recorded in the control plane (deprovisioning requires one) and in
//! the admin audit once it is complete.
//!
//! The answer starts before the last table is read: an export that fails
//! half-way ends the stream early, and a restore refuses the truncated
//! archive.

use std::io::{self, Write};

use rocket::{
    Request, Route, State, get,
    http::{ContentType, Header},
    response::{self, Responder, stream::ByteStream},
    routes, tokio,
};
use serde_json::json;
use utoipa::openapi::{KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type};

use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::MerchantId,
        platform::{audit, exports::TenantExport, merchants::Merchant},
    },
    error::{ApiError, ApiResult},
    tenancy::moves::archive,
};

/// Hands what an export writes to the response, a chunk at a time.
struct Channel(tokio::sync::mpsc::Sender<Vec<u8>>);

impl Write for Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The archive, offered as a file.
struct Download {
    slug: String,
    chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

impl<'r> Responder<'r, 'r> for Download {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'r> {
        let name = format!(
            "attachment; filename=\"posd-export-{}-{}.posd\"",
            self.slug,
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        );
        let mut chunks = self.chunks;
        let stream = ByteStream! {
            while let Some(chunk) = chunks.recv().await {
                yield chunk;
            }
        };
        let mut res = stream.respond_to(req)?;
        res.set_header(ContentType::Binary);
        res.set_header(Header::new("Content-Disposition", name));
        Ok(res)
    }
}

/// In the OpenAPI document, the archive is bytes (a `Vec<u8>` would read as
/// an array of numbers).
impl utoipa::PartialSchema for Download {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Download {}

#[utoipa::path(get, path = "/admin/tenants/{id}/export", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The merchant's archive: `posd-export 1`, a manifest line of JSON, then each table as framed binary COPY (see `posd tenants restore`)", content_type = "application/octet-stream", body = Download),
        (status = 401, response = super::docs::Unauthorized),
        (status = 404, response = super::docs::NotFound),
        (status = 503, response = super::docs::Unavailable),
    ))]
#[get("/admin/tenants/<id>/export")]
async fn export(admin: PlatformAdmin, app: &State<App>, id: MerchantId) -> ApiResult<Download> {
    let m = app
        .platform(move |p| Merchant::find(p, id).map_err(ApiError::or_not_found("merchant")))
        .await?;
    let (tx, chunks) = tokio::sync::mpsc::channel(16);
    let (tenancy, operator) = (app.tenancy.clone(), admin.operator);
    tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(64 << 10, Channel(tx));
        let exported = archive::export(&tenancy, id, &mut out);
        // The stream ends once the export is recorded, so that a client that
        // read it all can deprovision at once.
        match exported {
            Ok(manifest) => {
                let tier = manifest.tier;
                let recorded = tenancy.platform_blocking(|p| {
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
                });
                match recorded {
                    Ok(r) => tracing::info!(merchant = %id, export = %r.id, "tenant exported"),
                    Err(e) => {
                        tracing::error!(merchant = %id, error = %e, "an export could not be recorded");
                    }
                }
            }
            Err(e) => {
                tracing::error!(merchant = %id, error = %e, "tenant export failed; the archive was cut short");
            }
        }
        drop(out);
    });
    Ok(Download {
        slug: m.slug,
        chunks,
    })
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(export))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![export]
}
