//! Products: the catalog items a till sells.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::{
    TenantTx,
    schema::{inventory_levels, order_lines, products},
};
use crate::db::ids::{MerchantId, ProductId};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Product {
    #[serde(skip)]
    pub merchant_id: MerchantId,
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub tax_rate_bps: i32,
    pub category_id: Option<Uuid>,
    pub track_stock: bool,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = products)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub tax_rate_bps: i32,
    pub category_id: Option<Uuid>,
    pub track_stock: bool,
    pub active: bool,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = products)]
pub struct ProductChanges {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub price_minor: Option<i64>,
    pub tax_rate_bps: Option<i32>,
    pub category_id: Option<Option<Uuid>>,
    pub track_stock: Option<bool>,
    pub active: Option<bool>,
}

/// List filters; `after` is the last id of the previous page.
#[derive(Debug, Default)]
pub struct ProductFilter {
    pub q: Option<String>,
    pub category_id: Option<Uuid>,
    pub active: Option<bool>,
    pub after: Option<ProductId>,
    pub limit: i64,
}

/// Escapes `%`, `_` and `\` for a LIKE pattern.
pub(super) fn like_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// First key of the advisory lock product creations take when the merchant
/// has a product limit ("polm").
pub const PRODUCT_LIMIT_LOCK_CLASS: i32 = 0x706f_6c6d;

impl Product {
    /// One page, in id order (ids are UUIDv7, so this is creation order).
    pub fn list(tx: &mut TenantTx<'_>, f: &ProductFilter) -> QueryResult<Vec<Product>> {
        let mut query = products::table
            .filter(products::merchant_id.eq(tx.merchant))
            .filter(products::deleted_at.is_null())
            .select(Product::as_select())
            .order(products::id.asc())
            .limit(f.limit)
            .into_boxed();
        if let Some(q) = &f.q {
            let pat = like_pattern(q);
            query = query.filter(
                products::name
                    .ilike(pat.clone())
                    .or(products::sku.ilike(pat)),
            );
        }
        if let Some(c) = f.category_id {
            query = query.filter(products::category_id.eq(c));
        }
        if let Some(a) = f.active {
            query = query.filter(products::active.eq(a));
        }
        if let Some(after) = f.after {
            query = query.filter(products::id.gt(after.0));
        }
        query.load(tx.conn)
    }

    /// A product that is not deleted.
    pub fn find(tx: &mut TenantTx<'_>, id: ProductId) -> QueryResult<Product> {
        products::table
            .filter(products::merchant_id.eq(tx.merchant))
            .filter(products::id.eq(id.0))
            .filter(products::deleted_at.is_null())
            .select(Product::as_select())
            .first(tx.conn)
    }

    /// How many products the merchant has (deleted ones do not count),
    /// counted under a transaction-level advisory lock of the merchant's
    /// product creations: a creation that counts first holds it until it
    /// commits, so two creations at once cannot both find room for one.
    /// The lock lives where the products live, so it holds on every tier.
    /// The count is a statement of its own, after the lock: in read
    /// committed it then sees what the creation that held the lock
    /// committed (one statement would count from a snapshot taken before
    /// the wait).
    pub fn lock_and_count(tx: &mut TenantTx<'_>) -> QueryResult<i64> {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind::<diesel::sql_types::Integer, _>(PRODUCT_LIMIT_LOCK_CLASS)
            .bind::<diesel::sql_types::Text, _>(tx.merchant.to_string())
            .execute(tx.conn)?;
        products::table
            .filter(products::merchant_id.eq(tx.merchant))
            .filter(products::deleted_at.is_null())
            .count()
            .get_result(tx.conn)
    }

    /// Creates the product and its (empty) stock level.
    pub fn create(tx: &mut TenantTx<'_>, new: &NewProduct) -> QueryResult<Product> {
        let product = diesel::insert_into(products::table)
            .values((
                products::merchant_id.eq(tx.merchant),
                products::id.eq(Uuid::now_v7()),
                new,
            ))
            .returning(Product::as_returning())
            .get_result(tx.conn)?;
        diesel::insert_into(inventory_levels::table)
            .values((
                inventory_levels::merchant_id.eq(tx.merchant),
                inventory_levels::product_id.eq(product.id.0),
            ))
            .execute(tx.conn)?;
        Ok(product)
    }

    pub fn update(
        tx: &mut TenantTx<'_>,
        id: ProductId,
        changes: &ProductChanges,
    ) -> QueryResult<Product> {
        diesel::update(
            products::table
                .filter(products::merchant_id.eq(tx.merchant))
                .filter(products::id.eq(id.0))
                .filter(products::deleted_at.is_null()),
        )
        .set((changes, products::updated_at.eq(diesel::dsl::now)))
        .returning(Product::as_returning())
        .get_result(tx.conn)
    }

    /// Deletes a product. One that appears on an order is only marked
    /// deleted (and inactive), so that its orders keep their history and its
    /// sku becomes free. `NotFound` when there was nothing to delete.
    pub fn delete(tx: &mut TenantTx<'_>, id: ProductId) -> QueryResult<()> {
        let mine = products::table
            .filter(products::merchant_id.eq(tx.merchant))
            .filter(products::id.eq(id.0))
            .filter(products::deleted_at.is_null());
        let sold: bool = diesel::select(diesel::dsl::exists(
            order_lines::table
                .filter(order_lines::merchant_id.eq(tx.merchant))
                .filter(order_lines::product_id.eq(id.0)),
        ))
        .get_result(tx.conn)?;
        let n = if sold {
            diesel::update(mine)
                .set((
                    products::deleted_at.eq(Some(Utc::now())),
                    products::active.eq(false),
                    products::updated_at.eq(diesel::dsl::now),
                ))
                .execute(tx.conn)?
        } else {
            diesel::delete(mine).execute(tx.conn)?
        };
        if n == 0 {
            Err(diesel::result::Error::NotFound)
        } else {
            Ok(())
        }
    }
}
