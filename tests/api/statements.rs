//! Hand-written statements stay prepared, unlike `diesel::sql_query`.

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};
use posd::db::statement::statement;

use crate::common::{TestDb, count};

#[derive(QueryableByName)]
struct Echo {
    #[diesel(sql_type = Text)]
    word: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[test]
fn a_statement_is_prepared_once_per_connection() {
    let db = TestDb::new();
    let mut conn = db.app_role();
    for (word, n) in [("one", 1), ("two", 2), ("three", 3)] {
        let echo: Echo = statement("SELECT $1 AS word, $2 + $2 AS n /* prepared-check */")
            .bind::<Text, _>(word)
            .bind::<BigInt, _>(n)
            .get_result(&mut conn)
            .unwrap();
        assert_eq!((echo.word.as_str(), echo.n), (word, 2 * n));
        diesel::sql_query("SELECT 1 /* unprepared-check */")
            .execute(&mut conn)
            .unwrap();
    }
    let mut prepared = |marker: &str| {
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%{marker}%' AND statement NOT LIKE '%pg_prepared_statements%'"
            ),
        )
        .unwrap()
    };
    assert_eq!(
        prepared("prepared-check"),
        1,
        "one prepared statement, run three times"
    );
    assert_eq!(
        prepared("unprepared-check"),
        0,
        "sql_query is never prepared"
    );
}
