//! Values the control plane stores as text are read back into closed
//! enums: an unknown one is an error, never a quiet default.

use diesel::{IntoSql, RunQueryDsl, sql_types::Text};
use posd::db::kinds::{MerchantStatus, OrderStatus, Role, Tier};

use crate::common::TestDb;

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
}
