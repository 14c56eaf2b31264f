//! The merchant a request's host names ([`crate::tenancy::hosts`]).
//!
//! The [`HostRouting`] fairing resolves the host of every request before
//! routing. An unknown host is 404 `unknown_host` on every route: the
//! request is sent to [`REFUSED`] like the screen's refusals, so that no
//! handler runs (a failed lookup is its 503, the same way). Otherwise the
//! result is left in the request's cache for [`RequestHost`]: the login
//! takes its merchant from it, and the staff guard refuses a token of
//! another merchant (403 `tenant_mismatch`). Operator routes do not look
//! at it: they work from any host posd knows.

use rocket::{
    Data, Request,
    fairing::{Fairing, Info, Kind},
    http::{Method, Status, uri::Origin},
    request::{FromRequest, Outcome},
};

use super::screen::REFUSED;
use crate::{
    app::App,
    error::{ApiError, ErrorCode, leave},
    tenancy::hosts::{HostMerchant, HostTarget},
};

/// The merchant the request's host names; `None` for the platform.
#[derive(Debug, Clone, Default)]
pub struct RequestHost(pub Option<HostMerchant>);

/// The request's host as sent: the `Host` header, or HTTP/2's authority.
fn raw_host(req: &Request<'_>) -> Option<String> {
    req.headers()
        .get_one("Host")
        .map(str::to_string)
        .or_else(|| req.host().map(ToString::to_string))
}

/// The fairing that resolves every request's host.
pub struct HostRouting;

#[rocket::async_trait]
impl Fairing for HostRouting {
    fn info(&self) -> Info {
        Info {
            name: "host routing",
            kind: Kind::Request,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        if req.uri().path().as_str() == REFUSED {
            return;
        }
        let Some(app) = req.rocket().state::<App>() else {
            return;
        };
        let target = app.host(raw_host(req).as_deref()).await;
        let refusal = match target {
            Ok(HostTarget::Platform) => None,
            Ok(HostTarget::Merchant(m)) => {
                req.local_cache(|| RequestHost(Some(m)));
                None
            }
            Ok(HostTarget::Unknown) => Some(ApiError::new(
                Status::NotFound,
                ErrorCode::UnknownHost,
                "this host names no merchant",
            )),
            Err(e) => Some(e),
        };
        if let Some(e) = refusal {
            leave(req, e);
            req.set_method(Method::Get);
            req.set_uri(Origin::const_new(REFUSED, None));
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for &'r RequestHost {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        Outcome::Success(req.local_cache(RequestHost::default))
    }
}
