//! Categories: how a till groups its buttons.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::{
    TenantTx,
    schema::{categories, products},
};
use crate::db::ids::{CategoryId, MerchantId};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = categories, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Category {
    #[serde(skip)]
    pub merchant_id: MerchantId,
    pub id: CategoryId,
    pub name: String,
    pub sort_order: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = categories)]
pub struct NewCategory {
    pub name: String,
    pub sort_order: i32,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = categories)]
pub struct CategoryChanges {
    pub name: Option<String>,
    pub sort_order: Option<i32>,
}

impl Category {
    /// Every category, in display order.
    pub fn list(tx: &mut TenantTx<'_>) -> QueryResult<Vec<Category>> {
        categories::table
            .filter(categories::merchant_id.eq(tx.merchant))
            .order((categories::sort_order.asc(), categories::name.asc()))
            .select(Category::as_select())
            .load(tx.conn)
    }

    pub fn create(tx: &mut TenantTx<'_>, new: &NewCategory) -> QueryResult<Category> {
        diesel::insert_into(categories::table)
            .values((
                categories::merchant_id.eq(tx.merchant),
                categories::id.eq(Uuid::now_v7()),
                new,
            ))
            .returning(Category::as_returning())
            .get_result(tx.conn)
    }

    pub fn update(
        tx: &mut TenantTx<'_>,
        id: CategoryId,
        changes: &CategoryChanges,
    ) -> QueryResult<Category> {
        diesel::update(
            categories::table
                .filter(categories::merchant_id.eq(tx.merchant))
                .filter(categories::id.eq(id.0)),
        )
        .set((changes, categories::updated_at.eq(diesel::dsl::now)))
        .returning(Category::as_returning())
        .get_result(tx.conn)
    }

    /// Deletes the category; its products become uncategorised.
    pub fn delete(tx: &mut TenantTx<'_>, id: CategoryId) -> QueryResult<()> {
        diesel::update(
            products::table
                .filter(products::merchant_id.eq(tx.merchant))
                .filter(products::category_id.eq(id.0)),
        )
        .set(products::category_id.eq(None::<Uuid>))
        .execute(tx.conn)?;
        let n = diesel::delete(
            categories::table
                .filter(categories::merchant_id.eq(tx.merchant))
                .filter(categories::id.eq(id.0)),
        )
        .execute(tx.conn)?;
        if n == 0 {
            Err(diesel::result::Error::NotFound)
        } else {
            Ok(())
        }
    }
}
