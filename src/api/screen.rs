//! Requests refused before routing.
//!
//! - A form body (`application/x-www-form-urlencoded` or
//!   `multipart/form-data`) is 415 on every route: the API speaks JSON
//!   only, and Rocket would otherwise honour a form's `_method` field and
//!   turn a `POST` into a `DELETE`.
//! - A query string or path segment holding a control character (a NUL, say)
//!   is 422 naming the parameter (404 for a path): none reaches a handler
//!   or the database.
//!
//! A fairing cannot answer by itself, so it leaves the error for the
//! catchers and reroutes the request to [`REFUSED`], a path no route
//! serves: the catcher answers with the error left for it.

use rocket::{
    Data, Request,
    fairing::{Fairing, Info, Kind},
    http::{Method, Status, uri::Origin},
};

use crate::error::{ApiError, ErrorCode, leave};

/// Where a refused request is sent; no route serves it.
pub const REFUSED: &str = "/_posd/refused";

/// The fairing that screens every request.
pub struct Screen;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Why `req` is refused, if it is.
fn refusal(req: &Request<'_>) -> Option<ApiError> {
    if req
        .content_type()
        .is_some_and(|ct| ct.is_form() || ct.is_form_data())
    {
        return Some(ApiError::new(
            Status::UnsupportedMediaType,
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json",
        ));
    }
    if let Some(q) = req.uri().query() {
        for (key, value) in q.segments() {
            if has_control(key) || has_control(value) {
                let field = key.replace(char::is_control, "?");
                return Some(ApiError::invalid(
                    &field,
                    "must not contain control characters",
                ));
            }
        }
    }
    if req.uri().path().segments().any(has_control) {
        return Some(ApiError::from_status(Status::NotFound));
    }
    None
}

#[rocket::async_trait]
impl Fairing for Screen {
    fn info(&self) -> Info {
        Info {
            name: "request screen",
            kind: Kind::Request,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        if let Some(e) = refusal(req) {
            leave(req, e);
            req.set_method(Method::Get);
            req.set_uri(Origin::const_new(REFUSED, None));
        }
    }
}
