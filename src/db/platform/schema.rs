// Control-plane tables (migrations/). Kept in step with the migrations by
// hand or with `diesel print-schema`.

diesel::table! {
    merchants (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        timezone -> Text,
        currency -> Text,
        plan -> Text,
        status -> Text,
        tier -> Text,
        schema_name -> Text,
        database_id -> Nullable<Uuid>,
        generation -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        limit_overrides -> Jsonb,
        settings -> Jsonb,
        branding -> Jsonb,
        probe -> Bool,
    }
}

diesel::table! {
    plans (key) {
        key -> Text,
        name -> Text,
        rank -> Int4,
        max_staff -> Nullable<Int8>,
        max_products -> Nullable<Int8>,
        requests_per_minute -> Nullable<Int8>,
        max_storage_bytes -> Nullable<Int8>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    feature_flags (key) {
        key -> Text,
        description -> Text,
        default_on -> Bool,
        min_plan -> Nullable<Text>,
        rollout_percent -> Nullable<Int2>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    merchant_flag_overrides (merchant_id, flag) {
        merchant_id -> Uuid,
        flag -> Text,
        enabled -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    tenant_databases (id) {
        id -> Uuid,
        merchant_id -> Uuid,
        database_name -> Text,
        sealed_url -> Bytea,
        key_id -> Text,
        created_by_posd -> Bool,
        created_at -> Timestamptz,
        server_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    database_servers (id) {
        id -> Uuid,
        name -> Text,
        sealed_url -> Bytea,
        key_id -> Text,
        status -> Text,
        capacity -> Int4,
        connection_budget -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    staff_users (id) {
        id -> Uuid,
        merchant_id -> Uuid,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        active -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    provisioning_runs (id) {
        id -> Uuid,
        merchant_id -> Uuid,
        target_tier -> Text,
        status -> Text,
        failed_step -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        byo -> Bool,
        step -> Nullable<Text>,
        error_code -> Nullable<Text>,
        server_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    tenant_exports (id) {
        id -> Uuid,
        merchant_id -> Uuid,
        tier -> Text,
        requested_by -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    admin_audit (id) {
        id -> Int8,
        actor -> Text,
        action -> Text,
        merchant_id -> Nullable<Uuid>,
        details -> Jsonb,
        at -> Timestamptz,
    }
}

diesel::table! {
    tenant_migration_state (merchant_id) {
        merchant_id -> Uuid,
        version -> Nullable<Text>,
        status -> Text,
        error -> Nullable<Text>,
        duration_ms -> Int8,
        run_id -> Nullable<Uuid>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    tenant_migration_runs (id) {
        id -> Uuid,
        requested_by -> Text,
        target_version -> Text,
        dry_run -> Bool,
        total -> Int4,
        migrated -> Int4,
        failed -> Int4,
        skipped -> Int4,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    tenant_moves (id) {
        id -> Uuid,
        merchant_id -> Uuid,
        source_tier -> Text,
        source_schema -> Text,
        source_database_id -> Nullable<Uuid>,
        target_tier -> Text,
        target_schema -> Text,
        target_database_id -> Nullable<Uuid>,
        phase -> Text,
        status -> Text,
        tables -> Jsonb,
        backlog -> Int8,
        rounds -> Int4,
        fence_ms -> Nullable<Int4>,
        phase_ms -> Jsonb,
        error_code -> Nullable<Text>,
        error -> Nullable<Text>,
        retired_as -> Nullable<Text>,
        retain_until -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        flipped_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    merchant_integrations (id) {
        id -> Uuid,
        merchant_id -> Nullable<Uuid>,
        kind -> Text,
        provider -> Text,
        settings -> Jsonb,
        credentials_sealed -> Nullable<Bytea>,
        credentials_key_id -> Nullable<Text>,
        credentials_fingerprint -> Nullable<Text>,
        credentials_set_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    merchant_domains (domain) {
        domain -> Text,
        merchant_id -> Uuid,
        verified_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    merchant_usage (merchant_id, day) {
        merchant_id -> Uuid,
        day -> Date,
        api_calls -> Int8,
        orders -> Int8,
        db_time_us -> Int8,
        rows_stored -> Nullable<Int8>,
        bytes_stored -> Nullable<Int8>,
    }
}

diesel::table! {
    jobs (id) {
        id -> Uuid,
        merchant_id -> Uuid,
        generation -> Int8,
        kind -> Text,
        args -> Jsonb,
        dedupe_key -> Nullable<Text>,
        status -> Text,
        attempts -> Int4,
        max_attempts -> Int4,
        run_at -> Timestamptz,
        error_code -> Nullable<Text>,
        error -> Nullable<Text>,
        result -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    merchant_daily_summaries (merchant_id, day) {
        merchant_id -> Uuid,
        day -> Date,
        currency -> Text,
        order_count -> Int8,
        voided_count -> Int8,
        late_order_count -> Int8,
        gross_sales_minor -> Int8,
        discounts_minor -> Int8,
        tax_minor -> Int8,
        sales_minor -> Int8,
        rounding_minor -> Int8,
        refunds_minor -> Int8,
        refund_count -> Int8,
        net_minor -> Int8,
        computed_at -> Timestamptz,
    }
}

diesel::joinable!(staff_users -> merchants (merchant_id));
diesel::joinable!(merchant_domains -> merchants (merchant_id));
diesel::joinable!(merchant_usage -> merchants (merchant_id));
diesel::joinable!(jobs -> merchants (merchant_id));
diesel::joinable!(tenant_databases -> database_servers (server_id));
diesel::joinable!(merchant_daily_summaries -> merchants (merchant_id));
diesel::joinable!(tenant_migration_state -> merchants (merchant_id));
diesel::joinable!(merchants -> plans (plan));
diesel::joinable!(merchant_flag_overrides -> merchants (merchant_id));
diesel::joinable!(merchant_flag_overrides -> feature_flags (flag));
diesel::allow_tables_to_appear_in_same_query!(
    merchants,
    plans,
    feature_flags,
    merchant_flag_overrides,
    tenant_databases,
    staff_users,
    provisioning_runs,
    admin_audit,
    tenant_migration_state,
    tenant_migration_runs,
    tenant_exports,
    tenant_moves,
    merchant_integrations,
    merchant_domains,
    merchant_usage,
    jobs,
    merchant_daily_summaries,
    database_servers,
);
