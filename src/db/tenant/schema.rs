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
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    categories (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        name -> Text,
        sort_order -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    inventory_levels (merchant_id, product_id) {
        merchant_id -> Uuid,
        product_id -> Uuid,
        on_hand -> Int8,
        needs_count -> Bool,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stock_movements (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        product_id -> Uuid,
        delta -> Int8,
        reason -> Text,
        order_id -> Nullable<Uuid>,
        refund_id -> Nullable<Uuid>,
        staff_id -> Nullable<Uuid>,
        note -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    customers (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        name -> Text,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        note -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    orders (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        status -> Text,
        source -> Text,
        client_bill_id -> Nullable<Uuid>,
        customer_id -> Nullable<Uuid>,
        staff_id -> Uuid,
        currency -> Text,
        gross_minor -> Int8,
        discount_minor -> Int8,
        tax_minor -> Int8,
        total_minor -> Int8,
        tendered_minor -> Int8,
        change_minor -> Int8,
        refunded_minor -> Int8,
        note -> Nullable<Text>,
        created_at -> Timestamptz,
        recorded_at -> Timestamptz,
        voided_at -> Nullable<Timestamptz>,
        prices_include_tax -> Bool,
        rounding_minor -> Int8,
    }
}

diesel::table! {
    order_lines (merchant_id, order_id, line_no) {
        merchant_id -> Uuid,
        order_id -> Uuid,
        line_no -> Int4,
        product_id -> Uuid,
        sku -> Text,
        name -> Text,
        quantity -> Int4,
        unit_price_minor -> Int8,
        tax_rate_bps -> Int4,
        gross_minor -> Int8,
        discount_minor -> Int8,
        tax_minor -> Int8,
        total_minor -> Int8,
        refunded_quantity -> Int4,
        refunded_minor -> Int8,
    }
}

diesel::table! {
    payments (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        order_id -> Uuid,
        method -> Text,
        tendered_minor -> Int8,
        amount_minor -> Int8,
        reference -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    refunds (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        order_id -> Uuid,
        amount_minor -> Int8,
        method -> Text,
        restock -> Bool,
        reason -> Nullable<Text>,
        staff_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    refund_lines (merchant_id, refund_id, line_no) {
        merchant_id -> Uuid,
        refund_id -> Uuid,
        order_id -> Uuid,
        line_no -> Int4,
        quantity -> Int4,
        amount_minor -> Int8,
    }
}

diesel::table! {
    idempotency_keys (merchant_id, key) {
        merchant_id -> Uuid,
        key -> Text,
        request_hash -> Text,
        response_status -> Nullable<Int4>,
        response_body -> Nullable<Jsonb>,
        locked_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    product_versions (merchant_id, product_id, valid_from) {
        merchant_id -> Uuid,
        product_id -> Uuid,
        valid_from -> Timestamptz,
        price_minor -> Int8,
        tax_rate_bps -> Int4,
        active -> Bool,
    }
}

diesel::table! {
    audit_events (merchant_id, id) {
        merchant_id -> Uuid,
        id -> Uuid,
        at -> Timestamptz,
        actor_staff_id -> Nullable<Uuid>,
        actor_label -> Text,
        action -> Text,
        subject -> Nullable<Text>,
        details -> Jsonb,
        request_id -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    products,
    categories,
    inventory_levels,
    stock_movements,
    customers,
    orders,
    order_lines,
    payments,
    refunds,
    refund_lines,
    idempotency_keys,
    product_versions,
    audit_events,
);
