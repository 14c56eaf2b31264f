//! Values the control plane stores as text are read back into closed
//! enums: an unknown one is an error, never a quiet default.

use diesel::{IntoSql, RunQueryDsl, sql_types::Text};
use posd::db::kinds::{
    MerchantStatus, Method, MigrationStatus, OrderSource, OrderStatus, ProvisioningStatus, Role,
    Tier,
};

use crate::common::TestDb;

/// Reads every value of a kind back from its stored name, and checks that
/// the stored name is the wire name.
fn round_trip<T>(c: &mut diesel::PgConnection, all: &[T], name: fn(T) -> &'static str)
where
    T: Copy
        + PartialEq
        + std::fmt::Debug
        + serde::Serialize
        + diesel::deserialize::FromSqlRow<Text, diesel::pg::Pg>
        + 'static,
{
    for &v in all {
        let read: T = diesel::select(name(v).into_sql::<Text>())
            .get_result(c)
            .unwrap();
        assert_eq!(read, v);
        assert_eq!(serde_json::to_value(v).unwrap(), name(v));
    }
}

/// What reading `s` as a `T` fails with.
fn unknown<T>(c: &mut diesel::PgConnection, s: &str) -> String
where
    T: std::fmt::Debug + diesel::deserialize::FromSqlRow<Text, diesel::pg::Pg> + 'static,
{
    format!(
        "{:?}",
        diesel::select(s.into_sql::<Text>())
            .get_result::<T>(c)
            .unwrap_err()
    )
}

#[test]
fn an_unknown_tier_or_status_is_an_error_not_a_default() {
    let db = TestDb::new();
    let mut c = db.owner();
    round_trip(&mut c, Tier::ALL, Tier::as_str);
    round_trip(&mut c, MerchantStatus::ALL, MerchantStatus::as_str);
    round_trip(&mut c, Role::ALL, Role::as_str);
    round_trip(&mut c, OrderStatus::ALL, OrderStatus::as_str);
    round_trip(&mut c, Method::ALL, Method::as_str);
    round_trip(&mut c, OrderSource::ALL, OrderSource::as_str);
    round_trip(&mut c, ProvisioningStatus::ALL, ProvisioningStatus::as_str);
    round_trip(&mut c, MigrationStatus::ALL, MigrationStatus::as_str);
    // Diesel names the column; the cause says what was wrong.
    for err in [
        (unknown::<Tier>(&mut c, "moon"), "unknown Tier `moon`"),
        (
            unknown::<MerchantStatus>(&mut c, "closed"),
            "unknown MerchantStatus `closed`",
        ),
        (unknown::<Role>(&mut c, "boss"), "unknown Role `boss`"),
        (unknown::<Method>(&mut c, "iou"), "unknown Method `iou`"),
    ] {
        assert!(err.0.contains(err.1), "{err:?}");
    }
    assert!(Role::Cashier < Role::Manager && Role::Manager < Role::Owner);
    // Padding applies, for the command line's columns.
    assert_eq!(format!("{:<8}|", Tier::Schema), "schema  |");
}
