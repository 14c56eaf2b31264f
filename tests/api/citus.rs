//! The data plane can be distributed by `merchant_id` (Citus): every TENANT
//! table has a primary key and unique keys led by `merchant_id`, foreign keys
//! between TENANT tables carry `merchant_id` at the same position on both
//! sides, no foreign key crosses the data plane's border, and the tables
//! `classification.rs` lists are the tables the schema has. Read from the
//! catalog of freshly migrated tenant schemas, on every tier; Citus itself is
//! not installed.

use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl,
    connection::SimpleConnection,
    sql_types::{Array, Bool, Nullable, Text},
};

use crate::common::{Server, TestApp};
use posd::tenancy::{
    SHARED_SCHEMA, Tier, classification::TENANT, tenant_database_name, tenant_schema_name,
};

/// The column every TENANT table is distributed by.
const DISTRIBUTION_COLUMN: &str = "merchant_id";

#[derive(QueryableByName)]
struct Table {
    #[diesel(sql_type = Text)]
    name: String,
    /// `merchant_id`'s type, with NOT NULL when it has it; NULL without the column.
    #[diesel(sql_type = Nullable<Text>)]
    merchant_id: Option<String>,
    #[diesel(sql_type = Bool)]
    has_primary_key: bool,
}

/// A unique or exclusion index, with the constraint it backs if any.
#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    index_name: String,
    /// `primary key`, `unique constraint`, `exclusion constraint` or `unique index`.
    #[diesel(sql_type = Text)]
    kind: String,
    /// The first key column; NULL when it is an expression.
    #[diesel(sql_type = Nullable<Text>)]
    leading: Option<String>,
    #[diesel(sql_type = Text)]
    definition: String,
}

/// A foreign key from or into the schema.
#[derive(QueryableByName)]
struct ForeignKey {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    constraint_name: String,
    #[diesel(sql_type = Array<Text>)]
    columns: Vec<String>,
    #[diesel(sql_type = Text)]
    ref_schema: String,
    #[diesel(sql_type = Text)]
    ref_table: String,
    #[diesel(sql_type = Array<Text>)]
    ref_columns: Vec<String>,
}

fn position(columns: &[String]) -> Option<usize> {
    columns.iter().position(|c| c == DISTRIBUTION_COLUMN)
}

/// Everything that would stop `tables` (the data plane) of `schema`, in the
/// database `conn` is on, from being distributed by `merchant_id` and
/// co-located: one readable line per problem, naming the table and the
/// constraint or index. Empty when there is none.
fn distribution_violations(conn: &mut PgConnection, schema: &str, tables: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let in_plane = |s: &str, t: &str| s == schema && tables.contains(&t);

    // (e) The list and the schema agree; every table has merchant_id, the
    // same type everywhere (co-location), and (a) a primary key.
    let found: Vec<Table> = diesel::sql_query(
        "SELECT c.relname::text AS name,
                (SELECT format_type(a.atttypid, a.atttypmod)
                        || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                   FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'merchant_id'
                    AND a.attnum > 0 AND NOT a.attisdropped) AS merchant_id,
                EXISTS (SELECT 1 FROM pg_index i
                        WHERE i.indrelid = c.oid AND i.indisprimary) AS has_primary_key
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
          ORDER BY 1",
    )
    .bind::<Text, _>(schema)
    .load(conn)
    .expect("list the schema's tables");
    for t in tables {
        if !found.iter().any(|f| f.name == *t) {
            out.push(format!(
                "{schema}.{t}: listed as TENANT in classification.rs but not in the schema"
            ));
        }
    }
    for t in &found {
        if !tables.contains(&t.name.as_str()) {
            // Diesel's migration bookkeeping is in every tenant schema.
            if !t.name.starts_with("__diesel") {
                out.push(format!(
                    "{schema}.{}: in the schema but not listed as TENANT in classification.rs",
                    t.name
                ));
            }
            continue;
        }
        match t.merchant_id.as_deref() {
            Some("uuid NOT NULL") => {}
            Some(other) => out.push(format!(
                "{schema}.{}: merchant_id is {other}, not uuid NOT NULL as in every other table",
                t.name
            )),
            None => out.push(format!("{schema}.{}: no merchant_id column", t.name)),
        }
        if !t.has_primary_key {
            out.push(format!("{schema}.{}: no primary key", t.name));
        }
    }

    // (a) and (b): every primary key, unique constraint, unique index
    // (partial and expression ones included) and exclusion constraint
    // leads with merchant_id.
    let keys: Vec<Key> = diesel::sql_query(
        "SELECT c.relname::text AS table_name, ic.relname::text AS index_name,
                CASE con.contype WHEN 'p' THEN 'primary key'
                                 WHEN 'u' THEN 'unique constraint'
                                 WHEN 'x' THEN 'exclusion constraint'
                                 ELSE 'unique index' END AS kind,
                CASE WHEN i.indkey[0] = 0 THEN NULL ELSE a.attname::text END AS leading,
                pg_get_indexdef(i.indexrelid) AS definition
           FROM pg_index i
           JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_class ic ON ic.oid = i.indexrelid
           LEFT JOIN pg_constraint con
                  ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                 AND con.contype IN ('p', 'u', 'x')
           LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE n.nspname = $1 AND (i.indisunique OR i.indisexclusion)
          ORDER BY 1, 2",
    )
    .bind::<Text, _>(schema)
    .load(conn)
    .expect("list the schema's unique keys");
    for k in keys
        .iter()
        .filter(|k| tables.contains(&k.table_name.as_str()))
    {
        if k.leading.as_deref() != Some(DISTRIBUTION_COLUMN) {
            let lead = k
                .leading
                .as_deref()
                .map_or_else(|| "an expression".to_string(), |c| format!("column {c}"));
            out.push(format!(
                "{schema}.{}: {} {} leads with {lead}, not merchant_id ({})",
                k.table_name, k.kind, k.index_name, k.definition
            ));
        }
    }

    // (c) and (d): foreign keys from and into the schema.
    let fks: Vec<ForeignKey> = diesel::sql_query(
        "SELECT n.nspname::text AS schema, c.relname::text AS table_name,
                con.conname::text AS constraint_name,
                ARRAY(SELECT a.attname::text
                        FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                       ORDER BY k.ord) AS columns,
                fn.nspname::text AS ref_schema, fc.relname::text AS ref_table,
                ARRAY(SELECT a.attname::text
                        FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
                       ORDER BY k.ord) AS ref_columns
           FROM pg_constraint con
           JOIN pg_class c ON c.oid = con.conrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_class fc ON fc.oid = con.confrelid
           JOIN pg_namespace fn ON fn.oid = fc.relnamespace
          WHERE con.contype = 'f' AND (n.nspname = $1 OR fn.nspname = $1)
          ORDER BY 1, 2, 3",
    )
    .bind::<Text, _>(schema)
    .load(conn)
    .expect("list the foreign keys");
    for fk in &fks {
        let from = format!("{}.{}", fk.schema, fk.table_name);
        let to = format!("{}.{}", fk.ref_schema, fk.ref_table);
        let shape = format!(
            "({}) -> {to} ({})",
            fk.columns.join(", "),
            fk.ref_columns.join(", ")
        );
        let source_in = in_plane(&fk.schema, &fk.table_name);
        let target_in = in_plane(&fk.ref_schema, &fk.ref_table);
        if !source_in {
            if target_in {
                out.push(format!(
                    "{from}: foreign key {} points into the data plane from outside it: {shape}",
                    fk.constraint_name
                ));
            }
            continue;
        }
        if !target_in {
            out.push(format!(
                "{from}: foreign key {} points outside the data plane: {shape}",
                fk.constraint_name
            ));
            continue;
        }
        match (position(&fk.columns), position(&fk.ref_columns)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => out.push(format!(
                "{from}: foreign key {} has merchant_id at different positions on its two sides: {shape}",
                fk.constraint_name
            )),
            _ => out.push(format!(
                "{from}: foreign key {} does not include merchant_id on both sides: {shape}",
                fk.constraint_name
            )),
        }
    }
    out
}

#[rocket::async_test]
async fn every_tier_s_data_plane_can_be_distributed_by_merchant_id() {
    let t = TestApp::new().await;
    let schema_m = t.merchant("citus-schema", Tier::Schema).await;
    let dedicated_m = t.merchant("citus-dedicated", Tier::Dedicated).await;
    let server = Server::get();

    let mut platform = PgConnection::establish(&server.superuser_url(&t.db.name)).unwrap();
    let shared = distribution_violations(&mut platform, SHARED_SCHEMA, TENANT);
    assert!(shared.is_empty(), "{}", shared.join("\n"));

    let schema = tenant_schema_name(schema_m.id);
    let found = distribution_violations(&mut platform, &schema, TENANT);
    assert!(found.is_empty(), "{}", found.join("\n"));

    let mut dedicated =
        PgConnection::establish(&server.superuser_url(&tenant_database_name(dedicated_m.id)))
            .unwrap();
    let found =
        distribution_violations(&mut dedicated, &tenant_schema_name(dedicated_m.id), TENANT);
    assert!(found.is_empty(), "{}", found.join("\n"));

    // The same schema with one key more that Citus would refuse: reported.
    platform
        .batch_execute(&format!(
            "CREATE UNIQUE INDEX customers_email_anywhere ON {SHARED_SCHEMA}.customers (lower(email))"
        ))
        .unwrap();
    let shared = distribution_violations(&mut platform, SHARED_SCHEMA, TENANT);
    assert_eq!(shared.len(), 1, "{}", shared.join("\n"));
    let expected = format!(
        "{SHARED_SCHEMA}.customers: unique index customers_email_anywhere leads with an expression"
    );
    assert!(shared[0].starts_with(&expected), "{}", shared[0]);
}

#[rocket::async_test]
async fn the_check_reports_each_key_that_would_stop_distribution() {
    let t = TestApp::new().await;
    let mut conn = PgConnection::establish(&Server::get().superuser_url(&t.db.name)).unwrap();
    conn.batch_execute(
        "CREATE SCHEMA citus_scratch;
         SET search_path = citus_scratch;
         -- As it should be: a parent and a child keyed by merchant_id.
         CREATE TABLE rooms (merchant_id uuid NOT NULL, id uuid NOT NULL, name text,
                             PRIMARY KEY (merchant_id, id));
         CREATE UNIQUE INDEX rooms_name ON rooms (merchant_id, lower(name)) WHERE name IS NOT NULL;
         CREATE TABLE seats (merchant_id uuid NOT NULL, room_id uuid NOT NULL, n int NOT NULL,
                             PRIMARY KEY (merchant_id, room_id, n),
                             FOREIGN KEY (merchant_id, room_id) REFERENCES rooms (merchant_id, id));
         -- A primary key led by another column.
         CREATE TABLE tills (merchant_id uuid NOT NULL, id uuid NOT NULL,
                             CONSTRAINT tills_pkey PRIMARY KEY (id, merchant_id));
         -- A unique index on an expression alone, a partial unique index led by
         -- another column, and a unique constraint without merchant_id.
         CREATE TABLE people (merchant_id uuid NOT NULL, id uuid NOT NULL, email text, code text,
                              PRIMARY KEY (merchant_id, id),
                              CONSTRAINT people_id_key UNIQUE (id));
         CREATE UNIQUE INDEX people_email ON people (lower(email));
         CREATE UNIQUE INDEX people_code ON people (code, merchant_id) WHERE code IS NOT NULL;
         -- A foreign key that omits merchant_id, one with merchant_id at
         -- another position on each side, and one out of the data plane.
         CREATE TABLE visits (merchant_id uuid NOT NULL, id uuid NOT NULL, person_id uuid,
                              till_id uuid,
                              PRIMARY KEY (merchant_id, id),
                              CONSTRAINT visits_person_fk FOREIGN KEY (person_id) REFERENCES people (id),
                              CONSTRAINT visits_till_fk FOREIGN KEY (merchant_id, till_id)
                                  REFERENCES tills (id, merchant_id),
                              CONSTRAINT visits_merchant_fk FOREIGN KEY (merchant_id)
                                  REFERENCES public.merchants (id));
         -- No primary key, and merchant_id that may be NULL.
         CREATE TABLE notes (merchant_id uuid, body text);
         -- In the schema but not in the list.
         CREATE TABLE stray (merchant_id uuid NOT NULL PRIMARY KEY);
         RESET search_path;",
    )
    .unwrap();

    let listed = [
        "rooms", "seats", "tills", "people", "visits", "notes", "ghosts",
    ];
    let found = distribution_violations(&mut conn, "citus_scratch", &listed);
    let all = found.join("\n");
    let expected: [(&str, &str); 11] = [
        (
            "citus_scratch.tills",
            "primary key tills_pkey leads with column id",
        ),
        (
            "citus_scratch.people",
            "unique index people_email leads with an expression",
        ),
        (
            "citus_scratch.people",
            "unique index people_code leads with column code",
        ),
        (
            "citus_scratch.people",
            "unique constraint people_id_key leads with column id",
        ),
        (
            "citus_scratch.visits",
            "foreign key visits_person_fk does not include merchant_id",
        ),
        (
            "citus_scratch.visits",
            "foreign key visits_till_fk has merchant_id at different positions",
        ),
        (
            "citus_scratch.visits",
            "foreign key visits_merchant_fk points outside the data plane",
        ),
        ("citus_scratch.notes", "no primary key"),
        (
            "citus_scratch.notes",
            "merchant_id is uuid, not uuid NOT NULL",
        ),
        (
            "citus_scratch.ghosts",
            "listed as TENANT in classification.rs but not in the schema",
        ),
        ("citus_scratch.stray", "not listed as TENANT"),
    ];
    for (table, what) in expected {
        assert!(
            found
                .iter()
                .any(|v| v.starts_with(&format!("{table}:")) && v.contains(what)),
            "not reported: {table}: {what}\nreported:\n{all}"
        );
    }
    assert_eq!(found.len(), expected.len(), "reported:\n{all}");
    assert!(
        !found
            .iter()
            .any(|v| v.contains(".rooms") || v.contains(".seats")),
        "{all}"
    );

    // A foreign key into the data plane from a table outside it is reported
    // on the data plane's side too.
    conn.batch_execute(
        "CREATE TABLE public.citus_scratch_ref (merchant_id uuid NOT NULL, room_id uuid NOT NULL,
             CONSTRAINT citus_scratch_ref_fk FOREIGN KEY (merchant_id, room_id)
                 REFERENCES citus_scratch.rooms (merchant_id, id))",
    )
    .unwrap();
    let found = distribution_violations(&mut conn, "citus_scratch", &listed);
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("public.citus_scratch_ref:")
                && v.contains("citus_scratch_ref_fk points into the data plane")),
        "{}",
        found.join("\n")
    );
}
