//! Dedicated database servers for operators (admin token): register one,
//! list them with the databases on each, drain one and take it back. See
//! [`crate::tenancy::servers`].

use rocket::{
    Route, State, get, http::Status, post, response::status::Custom, routes, serde::json::Json,
    tokio,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use super::{Body, admin::record_audit, docs, fields::ServerName};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::ServerId,
        kinds::ServerStatus,
        platform::servers::{DatabaseServer, ServerUse},
    },
    error::{ApiError, ApiResult},
    tenancy::servers::{self, NewServer},
};

/// A server to register.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterServer {
    name: ServerName,
    /// The owner URL of a role that may create databases (`CREATEDB`);
    /// checked by connecting, stored sealed, never echoed back.
    #[schema(value_type = String)]
    url: SecretString,
    /// How many databases posd may create there.
    #[schema(minimum = 1, maximum = 100_000)]
    capacity: i32,
    /// Connections each posd instance may hold to the databases there.
    #[schema(minimum = 1, maximum = 10_000)]
    connection_budget: i32,
}

/// A registered server, as the answers carry it (never its URL).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Server {
    #[schema(value_type = uuid::Uuid)]
    id: ServerId,
    name: String,
    status: ServerStatus,
    capacity: i32,
    connection_budget: i32,
}

impl From<DatabaseServer> for Server {
    fn from(s: DatabaseServer) -> Self {
        Server {
            id: s.id,
            name: s.name,
            status: s.status,
            capacity: s.capacity,
            connection_budget: s.connection_budget,
        }
    }
}

/// Every server: the default one (`POSD_DEDICATED_SERVER_URL`) first.
#[derive(Serialize, ToSchema)]
struct ServerList {
    servers: Vec<ServerUse>,
}

/// Registers a server for new dedicated databases, after checking that it
/// answers and that its role may create databases.
#[utoipa::path(post, path = "/admin/servers", tag = "admin", security(("admin" = [])),
    request_body = RegisterServer,
    responses((status = 201, body = Server), (status = 401, response = docs::Unauthorized),
        (status = 409, description = "A server has that name", body = docs::ErrorEnvelope),
        (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/servers", data = "<body>")]
async fn register(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<RegisterServer>,
) -> ApiResult<Custom<Json<Server>>> {
    let b = body.0;
    let new = NewServer {
        name: b.name.into_inner(),
        url: b.url,
        capacity: b.capacity,
        connection_budget: b.connection_budget,
    };
    let tenancy = app.tenancy.clone();
    let server = tokio::task::spawn_blocking(move || {
        tenancy.platform_blocking(|p| Ok(servers::register(&tenancy, p, &new)))
    })
    .await
    .map_err(ApiError::internal)???;
    record_audit(
        app,
        &admin.operator,
        "servers.register",
        None,
        json!({ "server": server.id, "name": server.name }),
    )
    .await;
    Ok(Custom(Status::Created, Json(server.into())))
}

/// The servers with the databases posd placed on each.
#[utoipa::path(get, path = "/admin/servers", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = ServerList), (status = 401, response = docs::Unauthorized),
        (status = 503, response = docs::Unavailable)))]
#[get("/admin/servers")]
async fn list(_admin: PlatformAdmin, app: &State<App>) -> ApiResult<Json<ServerList>> {
    app.platform(|p| {
        Ok(ServerList {
            servers: DatabaseServer::usage(p)?,
        })
    })
    .await
    .map(Json)
}

async fn set_status(
    admin: &PlatformAdmin,
    app: &App,
    id: ServerId,
    status: ServerStatus,
) -> ApiResult<Json<Server>> {
    let server = app
        .platform(move |p| {
            DatabaseServer::set_status(p, id, status).map_err(ApiError::or_not_found("server"))
        })
        .await?;
    record_audit(
        app,
        &admin.operator,
        "servers.status",
        None,
        json!({ "server": id, "status": status }),
    )
    .await;
    Ok(Json(server.into()))
}

/// Drains a server: no new database is placed there (those there stay;
/// move them with `POST /admin/tenants/{id}/move`).
#[utoipa::path(post, path = "/admin/servers/{id}/drain", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Server), (status = 401, response = docs::Unauthorized),
        (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[post("/admin/servers/<id>/drain")]
async fn drain(admin: PlatformAdmin, app: &State<App>, id: ServerId) -> ApiResult<Json<Server>> {
    set_status(&admin, app, id, ServerStatus::Draining).await
}

/// Takes a drained server back: new databases may go there again.
#[utoipa::path(post, path = "/admin/servers/{id}/activate", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Server), (status = 401, response = docs::Unauthorized),
        (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[post("/admin/servers/<id>/activate")]
async fn activate(admin: PlatformAdmin, app: &State<App>, id: ServerId) -> ApiResult<Json<Server>> {
    set_status(&admin, app, id, ServerStatus::Active).await
}

#[derive(OpenApi)]
#[openapi(paths(register, list, drain, activate))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![register, list, drain, activate]
}
