//! ID newtypes: an order id cannot be passed where a product id is expected,
//! and a malformed id in a path is a 404, never a 500.

use diesel_derive_newtype::DieselNewType;
use rocket::request::FromParam;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($($name:ident),* $(,)?) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DieselNewType, Serialize, Deserialize)]
        #[derive(utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        /// A malformed id is looked up as the nil id, which never exists,
        /// so it answers 404 like any other unknown id.
        impl<'a> FromParam<'a> for $name {
            type Error = std::convert::Infallible;
            fn from_param(param: &'a str) -> Result<Self, Self::Error> {
                Ok($name(Uuid::parse_str(param).unwrap_or(Uuid::nil())))
            }
        }
    )*};
}

id_type!(
    MerchantId, StaffId, ProductId, CategoryId, CustomerId, OrderId, RefundId, DatabaseId, RunId
);
