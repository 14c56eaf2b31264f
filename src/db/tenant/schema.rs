// Data-plane tables (tenant_migrations/). Names are unqualified: every
// tenant transaction binds `search_path` to the merchant's schema.

diesel::table! {
    products (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        sku -> Text,
        name -> Text,
        price_minor -> Int8,
        tax_rate_bps -> Int4,
        category_id -> Nullable<Uuid>,
        track_stock -> Bool,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}
