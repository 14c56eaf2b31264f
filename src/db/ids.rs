//! ID newtypes: an order id cannot be passed where a product id is expected,
//! and a malformed id in a path is a 404, never a 500.

use diesel_derive_newtype::DieselNewType;
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

    )*};
}

id_type!(
    MerchantId,
    StaffId,
    ProductId,
    CategoryId,
    CustomerId,
    OrderId,
    RefundId,
    DatabaseId,
    RunId,
    IntegrationId,
    JobId,
    ServerId
);
