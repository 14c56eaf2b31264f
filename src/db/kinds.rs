//! The closed sets of values posd stores as text: a merchant's tier and
//! status, a staff member's role, where a provisioning run, a tenant's
//! migrations and a tier move stand, an order's status and source, how a
//! payment or a refund was made. Each maps to and from its column with
//! Diesel's `ToSql`/`FromSql`; a value the database holds that is not one
//! of the set is an error when it is read, never a quiet default (an
//! unknown tier must not route a merchant to the shared tier).

use diesel::{
    deserialize::{self, FromSql, FromSqlRow},
    expression::AsExpression,
    pg::{Pg, PgValue},
    serialize::{self, Output, ToSql},
    sql_types::Text,
};
use serde::{Deserialize, Serialize};

/// Defines a text enum: its variants and their stored names.
macro_rules! text_kind {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow,
            Serialize, Deserialize, utoipa::ToSchema,
        )]
        #[diesel(sql_type = Text)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(self.as_str(), &mut out.reborrow())
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                let s = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
                $name::parse(&s).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($name), " `{}` in the database"), s).into()
                })
            }
        }
    };
}

text_kind!(
    /// Where a merchant's data plane lives.
    Tier {
        /// Schema `tenant_shared` of the platform database, rows scoped by
        /// `merchant_id`.
        Shared = "shared",
        /// The merchant's own schema in the platform database.
        Schema = "schema",
        /// The merchant's own database.
        Dedicated = "dedicated",
    }
);

text_kind!(
    /// Whether a merchant's staff may work.
    MerchantStatus {
        Active = "active",
        /// Its staff get 403 `merchant_suspended`.
        Suspended = "suspended",
    }
);

text_kind!(
    /// A staff member's role at a merchant, in increasing order of power.
    Role {
        Cashier = "cashier",
        Manager = "manager",
        Owner = "owner",
    }
);

text_kind!(
    /// What a merchant's audit trail records (`audit_events.action`).
    AuditAction {
        /// A product's price changed: `details` has the old and new price.
        ProductPriceChanged = "product_price_changed",
        /// Stock received, damaged or corrected: the delta and the reason.
        StockAdjusted = "stock_adjusted",
        /// A stock count: the delta it made and the level counted.
        StockCounted = "stock_counted",
        OrderRefunded = "order_refunded",
        OrderVoided = "order_voided",
        /// The settings keys that changed, old and new values.
        SettingsChanged = "settings_changed",
        /// The branding keys that changed, old and new values.
        BrandingChanged = "branding_changed",
        StaffCreated = "staff_created",
        StaffRoleChanged = "staff_role_changed",
        StaffDeactivated = "staff_deactivated",
        StaffReactivated = "staff_reactivated",
        LoginSucceeded = "login_succeeded",
        /// A wrong password for an existing, active staff account.
        LoginFailed = "login_failed",
    }
);

text_kind!(
    /// Where an order stands.
    OrderStatus {
        Completed = "completed",
        /// Some of what was paid has been refunded.
        PartiallyRefunded = "partially_refunded",
        /// All of it has.
        Refunded = "refunded",
        /// Cancelled before settlement; it counts in no sum.
        Voided = "voided",
    }
);

text_kind!(
    /// Where an order comes from.
    OrderSource {
        /// Sold at a till that was online.
        Till = "till",
        /// A bill a till recorded while offline (`/offline-bills`).
        Offline = "offline",
    }
);

text_kind!(
    /// How a customer paid, or how a refund was given back.
    Method {
        Cash = "cash",
        Card = "card",
        GiftCard = "gift_card",
        Other = "other",
    }
);

text_kind!(
    /// Where a provisioning run stands.
    ProvisioningStatus {
        /// Recorded, or checking a database the merchant brings.
        Pending = "pending",
        /// Creating the schema or the database.
        Creating = "creating",
        /// Migrating, sealing the URL, placing the merchant.
        Migrating = "migrating",
        /// The merchant is placed: the run has ended.
        Ready = "ready",
        /// A step failed and what the run created was dropped: the run has
        /// ended.
        Failed = "failed",
    }
);

text_kind!(
    /// The outcome of a tenant's last migration.
    MigrationStatus {
        /// At the version recorded with it.
        Ok = "ok",
        /// The migration failed; the error is recorded with it.
        Failed = "failed",
    }
);

text_kind!(
    /// The phase a tier move is in (`crate::tenancy::moves`), in order.
    MovePhase {
        /// Creating the target and migrating it to the source's version.
        Prepare = "prepare",
        /// Installing change capture on the source.
        Capture = "capture",
        /// Copying a consistent snapshot, table by table.
        Copy = "copy",
        /// Applying the writes made since the snapshot.
        CatchUp = "catch_up",
        /// Comparing row counts and checksums of source and target.
        Verify = "verify",
        /// Holding the merchant's writes, applying the last changes,
        /// flipping the placement.
        Fence = "fence",
        /// Served from the target; the source is being retired.
        Retire = "retire",
        /// The source is kept, unreadable by the service, until cleanup.
        Retained = "retained",
        /// The source has been dropped.
        Cleaned = "cleaned",
    }
);

text_kind!(
    /// Whether a tier move is still going.
    MoveStatus {
        Running = "running",
        /// Cancel requested: the target is being dropped.
        Cancelling = "cancelling",
        /// Served from the target.
        Done = "done",
        /// Stopped by an error; nothing is left at the target.
        Failed = "failed",
        /// Cancelled; nothing is left at the target.
        Cancelled = "cancelled",
    }
);

text_kind!(
    /// Whether new dedicated databases may be placed on a registered server.
    ServerStatus {
        Active = "active",
        /// No new database goes there; those there stay.
        Draining = "draining",
    }
);

text_kind!(
    /// What a background job does (`crate::tenancy::jobs`).
    JobKind {
        /// Writes the merchant's figures for a business day that closed to
        /// the control plane.
        DailySummary = "daily_summary",
        /// Deletes the merchant's expired idempotency keys.
        ExpireIdempotencyKeys = "expire_idempotency_keys",
        /// Writes the merchant's archive to a file in `POSD_EXPORT_DIR`.
        Export = "export",
    }
);

text_kind!(
    /// Where a background job stands.
    JobStatus {
        /// Waiting for its time, or due.
        Queued = "queued",
        Done = "done",
        /// Out of attempts, or refused: a dead letter, kept for operators.
        Dead = "dead",
    }
);
