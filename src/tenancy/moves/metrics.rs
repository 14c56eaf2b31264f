//! What tier moves record for `/metrics`: rows copied, changes applied,
//! the backlog of each move under way, phase durations and fence times.
//! Series are per phase, and per run only while the run is active.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::db::{ids::RunId, kinds::MovePhase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub run: String,
}

/// The move metrics; cheap to clone (every handle shares its value).
#[derive(Clone)]
pub struct MoveMetrics {
    rows_copied: Counter,
    changes_applied: Counter,
    backlog: Family<RunLabels, Gauge>,
    phase_seconds: Family<PhaseLabels, Histogram>,
    fence_seconds: Histogram,
}

impl Default for MoveMetrics {
    fn default() -> Self {
        MoveMetrics {
            rows_copied: Counter::default(),
            changes_applied: Counter::default(),
            backlog: Family::default(),
            // 10 ms to about 3 hours
            phase_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 4.0, 11))
            }),
            // 1 ms to about 4 s
            fence_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
        }
    }
}

impl MoveMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "move_rows_copied",
            "Rows copied by tier moves' snapshot copies",
            self.rows_copied.clone(),
        );
        registry.register(
            "move_changes_applied",
            "Captured writes applied at tier moves' targets",
            self.changes_applied.clone(),
        );
        registry.register(
            "move_backlog",
            "Captured writes not yet applied, per tier move under way",
            self.backlog.clone(),
        );
        registry.register(
            "move_phase_duration_seconds",
            "Time tier moves spent in each phase",
            self.phase_seconds.clone(),
        );
        registry.register(
            "move_fence_duration_seconds",
            "How long tier moves held a merchant's writes at the flip",
            self.fence_seconds.clone(),
        );
    }

    pub(super) fn copied(&self, rows: u64) {
        self.rows_copied.inc_by(rows);
    }

    pub(super) fn applied(&self, run: RunId, changes: u64, backlog: i64) {
        self.changes_applied.inc_by(changes);
        self.backlog
            .get_or_create(&RunLabels {
                run: run.to_string(),
            })
            .set(backlog);
    }

    pub(super) fn phase(&self, phase: MovePhase, ms: u64) {
        let secs = std::time::Duration::from_millis(ms).as_secs_f64();
        self.phase_seconds
            .get_or_create(&PhaseLabels {
                phase: phase.to_string(),
            })
            .observe(secs);
    }

    pub(super) fn fence(&self, ms: i32) {
        let ms = u64::try_from(ms).unwrap_or(0);
        self.fence_seconds
            .observe(std::time::Duration::from_millis(ms).as_secs_f64());
    }

    /// Forgets a run's series once it ends.
    pub(super) fn ended(&self, run: RunId) {
        self.backlog.remove(&RunLabels {
            run: run.to_string(),
        });
    }
}
