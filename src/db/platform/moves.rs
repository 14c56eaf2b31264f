//! Tier moves: the durable record of each move of a merchant's data plane
//! (`crate::tenancy::moves` runs them).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::{Platform, schema::tenant_moves};
use crate::db::{
    ids::{DatabaseId, MerchantId, RunId},
    kinds::{MovePhase, MoveStatus, Tier},
};

/// A move as the control plane records it.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = tenant_moves, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Move {
    pub id: RunId,
    pub merchant_id: MerchantId,
    pub source_tier: Tier,
    #[serde(skip)]
    pub source_schema: String,
    #[serde(skip)]
    pub source_database_id: Option<DatabaseId>,
    pub target_tier: Tier,
    #[serde(skip)]
    pub target_schema: String,
    #[serde(skip)]
    pub target_database_id: Option<DatabaseId>,
    pub phase: MovePhase,
    pub status: MoveStatus,
    /// Per table, in copy order: `{table, rows, total}` (rows copied of the
    /// snapshot's total) and, once verified, `checksum`.
    #[schema(value_type = Vec<Object>)]
    pub tables: serde_json::Value,
    /// Changes captured at the source and not yet applied at the target.
    pub backlog: i64,
    /// Catch-up rounds run.
    pub rounds: i32,
    /// How long the merchant's writes were held at the flip.
    pub fence_ms: Option<i32>,
    /// Milliseconds spent in each finished phase.
    #[schema(value_type = Object)]
    pub phase_ms: serde_json::Value,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// Where the source is kept after the flip, until cleanup.
    pub retired_as: Option<String>,
    pub retain_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub flipped_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A move about to start.
#[derive(Debug, Insertable)]
#[diesel(table_name = tenant_moves)]
pub struct NewMove {
    pub id: RunId,
    pub merchant_id: MerchantId,
    pub source_tier: Tier,
    pub source_schema: String,
    pub source_database_id: Option<DatabaseId>,
    pub target_tier: Tier,
    pub target_schema: String,
    pub target_database_id: Option<DatabaseId>,
    pub phase: MovePhase,
    pub status: MoveStatus,
}

const ACTIVE: [MoveStatus; 2] = [MoveStatus::Running, MoveStatus::Cancelling];

impl Move {
    /// Whether the run still needs a driver.
    pub fn is_active(&self) -> bool {
        ACTIVE.contains(&self.status)
    }

    /// Records a new move; a unique violation means another move of the
    /// merchant is active.
    pub fn insert(p: &mut Platform<'_>, new: &NewMove) -> QueryResult<Move> {
        diesel::insert_into(tenant_moves::table)
            .values(new)
            .returning(Move::as_returning())
            .get_result(p.conn)
    }

    pub fn find(p: &mut Platform<'_>, id: RunId) -> QueryResult<Option<Move>> {
        tenant_moves::table
            .find(id)
            .select(Move::as_select())
            .first(p.conn)
            .optional()
    }

    /// [`Move::find`], locking the row until the transaction ends.
    pub fn lock(p: &mut Platform<'_>, id: RunId) -> QueryResult<Move> {
        tenant_moves::table
            .find(id)
            .select(Move::as_select())
            .for_update()
            .first(p.conn)
    }

    /// The merchant's moves, newest first.
    pub fn for_merchant(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<Vec<Move>> {
        tenant_moves::table
            .filter(tenant_moves::merchant_id.eq(merchant))
            .order(tenant_moves::created_at.desc())
            .select(Move::as_select())
            .load(p.conn)
    }

    /// The merchant's active move, if any.
    pub fn active(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<Option<Move>> {
        tenant_moves::table
            .filter(tenant_moves::merchant_id.eq(merchant))
            .filter(tenant_moves::status.eq_any(ACTIVE))
            .select(Move::as_select())
            .first(p.conn)
            .optional()
    }

    /// Every active move, oldest first.
    pub fn all_active(p: &mut Platform<'_>) -> QueryResult<Vec<Move>> {
        tenant_moves::table
            .filter(tenant_moves::status.eq_any(ACTIVE))
            .order(tenant_moves::created_at.asc())
            .select(Move::as_select())
            .load(p.conn)
    }

    /// Moves whose source is retained; with `due`, only those past their
    /// retention.
    pub fn retained(p: &mut Platform<'_>, due: bool) -> QueryResult<Vec<Move>> {
        let q = tenant_moves::table
            .filter(tenant_moves::phase.eq(MovePhase::Retained))
            .order(tenant_moves::created_at.asc())
            .select(Move::as_select())
            .into_boxed();
        let q = if due {
            q.filter(tenant_moves::retain_until.le(diesel::dsl::now))
        } else {
            q
        };
        q.load(p.conn)
    }

    /// Enters `phase`, recording how long `finished` (the phase left) took.
    pub fn enter(
        p: &mut Platform<'_>,
        id: RunId,
        phase: MovePhase,
        finished: Option<(MovePhase, u64)>,
    ) -> QueryResult<Move> {
        let timing = finished.map_or_else(
            || serde_json::json!({}),
            |(ph, ms)| serde_json::json!({ ph.as_str(): ms }),
        );
        diesel::update(tenant_moves::table.find(id))
            .set((
                tenant_moves::phase.eq(phase),
                tenant_moves::phase_ms
                    .eq(diesel::dsl::sql::<diesel::sql_types::Jsonb>("phase_ms || ")
                        .bind::<diesel::sql_types::Jsonb, _>(timing)),
                tenant_moves::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Move::as_returning())
            .get_result(p.conn)
    }

    /// Records copy or catch-up progress.
    pub fn progress(
        p: &mut Platform<'_>,
        id: RunId,
        tables: &serde_json::Value,
        backlog: i64,
        rounds: i32,
    ) -> QueryResult<()> {
        diesel::update(tenant_moves::table.find(id))
            .set((
                tenant_moves::tables.eq(tables),
                tenant_moves::backlog.eq(backlog),
                tenant_moves::rounds.eq(rounds),
                tenant_moves::updated_at.eq(diesel::dsl::now),
            ))
            .execute(p.conn)
            .map(drop)
    }

    /// Records the flip (inside the flip's transaction).
    pub fn flipped(p: &mut Platform<'_>, id: RunId, fence_ms: i32) -> QueryResult<()> {
        diesel::update(tenant_moves::table.find(id))
            .set((
                tenant_moves::phase.eq(MovePhase::Retire),
                tenant_moves::fence_ms.eq(fence_ms),
                tenant_moves::backlog.eq(0),
                tenant_moves::flipped_at.eq(diesel::dsl::now),
                tenant_moves::updated_at.eq(diesel::dsl::now),
            ))
            .execute(p.conn)
            .map(drop)
    }

    /// The fence's final duration, measured once it is lifted.
    pub fn set_fence_ms(p: &mut Platform<'_>, id: RunId, fence_ms: i32) -> QueryResult<()> {
        diesel::update(tenant_moves::table.find(id))
            .set(tenant_moves::fence_ms.eq(fence_ms))
            .execute(p.conn)
            .map(drop)
    }

    /// Notes an error of a run that goes on (retiring the source is
    /// retried).
    pub fn end_note(p: &mut Platform<'_>, id: RunId, error: &str) -> QueryResult<()> {
        diesel::update(tenant_moves::table.find(id))
            .set((
                tenant_moves::error.eq(error),
                tenant_moves::updated_at.eq(diesel::dsl::now),
            ))
            .execute(p.conn)
            .map(drop)
    }

    /// Marks the source retired as `name`, kept until `until`: the move is done.
    pub fn retired(
        p: &mut Platform<'_>,
        id: RunId,
        name: &str,
        until: DateTime<Utc>,
        retire_ms: u64,
    ) -> QueryResult<Move> {
        diesel::update(tenant_moves::table.find(id))
            .set((
                tenant_moves::phase.eq(MovePhase::Retained),
                tenant_moves::status.eq(MoveStatus::Done),
                tenant_moves::retired_as.eq(name),
                tenant_moves::retain_until.eq(until),
                tenant_moves::phase_ms.eq(diesel::dsl::sql::<diesel::sql_types::Jsonb>(
                    "phase_ms || ",
                )
                .bind::<diesel::sql_types::Jsonb, _>(serde_json::json!({ "retire": retire_ms }))),
                tenant_moves::finished_at.eq(diesel::dsl::now),
                tenant_moves::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Move::as_returning())
            .get_result(p.conn)
    }

    /// Marks the retained source dropped.
    pub fn cleaned(p: &mut Platform<'_>, id: RunId) -> QueryResult<()> {
        diesel::update(tenant_moves::table.find(id))
            .set((
                tenant_moves::phase.eq(MovePhase::Cleaned),
                tenant_moves::updated_at.eq(diesel::dsl::now),
            ))
            .execute(p.conn)
            .map(drop)
    }

    /// Asks a running move to stop; `false` when it is past the point of
    /// no return (the flip) or has ended.
    pub fn request_cancel(p: &mut Platform<'_>, id: RunId) -> QueryResult<bool> {
        let before_flip = [
            MovePhase::Prepare,
            MovePhase::Capture,
            MovePhase::Copy,
            MovePhase::CatchUp,
            MovePhase::Verify,
            MovePhase::Fence,
        ];
        let n = diesel::update(
            tenant_moves::table
                .find(id)
                .filter(tenant_moves::status.eq(MoveStatus::Running))
                .filter(tenant_moves::phase.eq_any(before_flip)),
        )
        .set((
            tenant_moves::status.eq(MoveStatus::Cancelling),
            tenant_moves::updated_at.eq(diesel::dsl::now),
        ))
        .execute(p.conn)?;
        Ok(n == 1)
    }

    /// Ends the run as `status` (failed or cancelled), with the reason.
    pub fn end(
        p: &mut Platform<'_>,
        id: RunId,
        status: MoveStatus,
        code: Option<&str>,
        error: Option<&str>,
    ) -> QueryResult<Move> {
        diesel::update(tenant_moves::table.find(id))
            .set((
                tenant_moves::status.eq(status),
                tenant_moves::error_code.eq(code),
                tenant_moves::error.eq(error),
                tenant_moves::finished_at.eq(diesel::dsl::now),
                tenant_moves::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Move::as_returning())
            .get_result(p.conn)
    }
}
