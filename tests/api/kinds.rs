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

#[test]
fn an_unknown_tier_or_status_is_an_error_not_a_default() {
    let db = TestDb::new();
    let mut c = db.owner();
    let read = |c: &mut diesel::PgConnection, s: &str| {
        diesel::select(s.into_sql::<Text>()).get_result::<Tier>(c)
    };
    for t in Tier::ALL {
        assert_eq!(read(&mut c, t.as_str()).unwrap(), *t);
    }
    // Diesel names the column; the cause says what was wrong.
    let err = format!("{:?}", read(&mut c, "moon").unwrap_err());
    assert!(err.contains("unknown Tier `moon`"), "{err}");
    let err = format!(
        "{:?}",
        diesel::select("closed".into_sql::<Text>())
            .get_result::<MerchantStatus>(&mut c)
            .unwrap_err()
    );
    assert!(err.contains("unknown MerchantStatus `closed`"), "{err}");
    let err = format!(
        "{:?}",
        diesel::select("boss".into_sql::<Text>())
            .get_result::<Role>(&mut c)
            .unwrap_err()
    );
    assert!(err.contains("unknown Role `boss`"), "{err}");
    assert!(Role::Cashier < Role::Manager && Role::Manager < Role::Owner);
    let partly = diesel::select("partially_refunded".into_sql::<Text>())
        .get_result::<OrderStatus>(&mut c)
        .unwrap();
    assert_eq!(partly, OrderStatus::PartiallyRefunded);
    assert_eq!(
        serde_json::to_value(partly).unwrap(),
        serde_json::json!("partially_refunded")
    );
    round_trip(&mut c, Method::ALL, Method::as_str);
    round_trip(&mut c, OrderSource::ALL, OrderSource::as_str);
    round_trip(&mut c, ProvisioningStatus::ALL, ProvisioningStatus::as_str);
    round_trip(&mut c, MigrationStatus::ALL, MigrationStatus::as_str);
    let err = format!(
        "{:?}",
        diesel::select("iou".into_sql::<Text>())
            .get_result::<Method>(&mut c)
            .unwrap_err()
    );
    assert!(err.contains("unknown Method `iou`"), "{err}");
    // Padding applies, for the command line's columns.
    assert_eq!(format!("{:<8}|", Tier::Schema), "schema  |");
}
