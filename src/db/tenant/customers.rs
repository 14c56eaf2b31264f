//! Customers: who bought, for receipts and loyalty.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::{TenantTx, products::like_pattern, schema::customers};
use crate::db::ids::{CustomerId, MerchantId};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = customers, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    #[serde(skip)]
    pub merchant_id: MerchantId,
    pub id: CustomerId,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = customers)]
pub struct NewCustomer {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = customers)]
pub struct CustomerChanges {
    pub name: Option<String>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub note: Option<Option<String>>,
}

/// List filters; `after` is the last id of the previous page.
#[derive(Debug, Default)]
pub struct CustomerFilter {
    pub q: Option<String>,
    pub after: Option<CustomerId>,
    pub limit: i64,
}

impl Customer {
    /// One page, in id (creation) order; `q` searches name, email and phone.
    pub fn list(tx: &mut TenantTx<'_>, f: &CustomerFilter) -> QueryResult<Vec<Customer>> {
        let mut query = customers::table
            .filter(customers::merchant_id.eq(tx.merchant))
            .select(Customer::as_select())
            .order(customers::id.asc())
            .limit(f.limit)
            .into_boxed();
        if let Some(q) = &f.q {
            let pat = like_pattern(q);
            query = query.filter(
                customers::name
                    .ilike(pat.clone())
                    .or(customers::email.ilike(pat.clone()))
                    .or(customers::phone.ilike(pat)),
            );
        }
        if let Some(after) = f.after {
            query = query.filter(customers::id.gt(after.0));
        }
        query.load(tx.conn)
    }

    pub fn find(tx: &mut TenantTx<'_>, id: CustomerId) -> QueryResult<Customer> {
        customers::table
            .filter(customers::merchant_id.eq(tx.merchant))
            .filter(customers::id.eq(id.0))
            .select(Customer::as_select())
            .first(tx.conn)
    }

    pub fn create(tx: &mut TenantTx<'_>, new: &NewCustomer) -> QueryResult<Customer> {
        diesel::insert_into(customers::table)
            .values((
                customers::merchant_id.eq(tx.merchant),
                customers::id.eq(Uuid::now_v7()),
                new,
            ))
            .returning(Customer::as_returning())
            .get_result(tx.conn)
    }

    pub fn update(
        tx: &mut TenantTx<'_>,
        id: CustomerId,
        changes: &CustomerChanges,
    ) -> QueryResult<Customer> {
        diesel::update(
            customers::table
                .filter(customers::merchant_id.eq(tx.merchant))
                .filter(customers::id.eq(id.0)),
        )
        .set((changes, customers::updated_at.eq(diesel::dsl::now)))
        .returning(Customer::as_returning())
        .get_result(tx.conn)
    }
}
