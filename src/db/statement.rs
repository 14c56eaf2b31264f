//! Hand-written SQL that stays prepared.
//!
//! Diesel keeps a prepared statement per query shape, but only for queries
//! it can identify: `diesel::sql_query`, every `UPDATE` and every `INSERT`
//! of a derived `Insertable` are parsed and planned again at each run. A
//! [`Statement`] is SQL fixed at compile time with typed binds, which
//! Diesel's statement cache keys by its text, so PostgreSQL parses and plans
//! it once per connection. The hot write paths (orders, stock, idempotency)
//! use it; `sql_query` remains for SQL assembled at run time (DDL).
//!
//! Placeholders are `$1`, `$2`, ... as in PostgreSQL, and one may appear
//! several times; every bind must be used. The text must not contain `$`
//! otherwise (no dollar quoting).
//!
//! [`call`] makes the same from text built at run time, for a call of a
//! function in one merchant's schema: its text names the schema, so it is
//! prepared once per connection and schema.

use std::{borrow::Cow, marker::PhantomData};

use diesel::{
    QueryResult, RunQueryDsl,
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    result::Error,
    serialize::ToSql,
    sql_types::{HasSqlType, Untyped},
};

/// Starts a statement; add its binds in placeholder order with
/// [`Statement::bind`].
pub fn statement(sql: &'static str) -> Statement<'static> {
    Statement {
        sql: Cow::Borrowed(sql),
        binds: Vec::new(),
    }
}

/// Starts a statement whose text is made at run time (see the module docs).
pub fn call(sql: String) -> Statement<'static> {
    Statement {
        sql: Cow::Owned(sql),
        binds: Vec::new(),
    }
}

/// A statement with fixed text and typed binds (see the module docs). Load
/// its rows into `QueryableByName` structs, as with `sql_query`.
#[must_use = "a statement does nothing until it is run"]
pub struct Statement<'a> {
    sql: Cow<'static, str>,
    binds: Vec<Box<dyn Bind + Send + 'a>>,
}

impl<'a> Statement<'a> {
    /// Binds the next placeholder (`$1` first) to `value` as SQL type `ST`.
    pub fn bind<ST, T>(mut self, value: T) -> Statement<'a>
    where
        Pg: HasSqlType<ST>,
        T: ToSql<ST, Pg> + Send + 'a,
        ST: 'a,
    {
        self.binds.push(Box::new(Value {
            value,
            sql_type: PhantomData,
        }));
        self
    }
}

trait Bind {
    fn push<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Value<ST, T> {
    value: T,
    sql_type: PhantomData<fn() -> ST>,
}

impl<ST, T> Bind for Value<ST, T>
where
    Pg: HasSqlType<ST>,
    T: ToSql<ST, Pg>,
{
    fn push<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, T>(&self.value)
    }
}

fn malformed(sql: &str, why: &str) -> Error {
    Error::QueryBuilderError(format!("statement {sql:?}: {why}").into())
}

impl QueryFragment<Pg> for Statement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut used = vec![false; self.binds.len()];
        let mut rest: &str = &self.sql;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let n: usize = rest[at + 1..at + 1 + digits]
                .parse()
                .map_err(|_| malformed(&self.sql, "a `$` that is not a placeholder"))?;
            let bind = n
                .checked_sub(1)
                .and_then(|i| self.binds.get(i).map(|b| (i, b)))
                .ok_or_else(|| {
                    malformed(
                        &self.sql,
                        &format!("${n} has no bind ({} bound)", self.binds.len()),
                    )
                })?;
            used[bind.0] = true;
            bind.1.push(out.reborrow())?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        match used.iter().position(|u| !u) {
            Some(i) => Err(malformed(
                &self.sql,
                &format!("bind {} is never used", i + 1),
            )),
            None => Ok(()),
        }
    }
}

/// Keyed by its SQL text in Diesel's statement cache (`HAS_STATIC_QUERY_ID`
/// is false, and nothing here marks the statement unsafe to cache).
impl QueryId for Statement<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Statement<'_> {}

#[cfg(test)]
mod tests {
    use diesel::sql_types::{Integer, Text};

    use super::*;

    fn sql(s: &Statement<'_>) -> String {
        diesel::debug_query::<Pg, _>(s).to_string()
    }

    #[test]
    fn placeholders_are_numbered_in_order_and_may_repeat() {
        let s = statement("SELECT $2 || $1, $2")
            .bind::<Text, _>("a")
            .bind::<Integer, _>(7);
        assert_eq!(sql(&s), r#"SELECT $1 || $2, $3 -- binds: [7, "a", 7]"#);
    }

    #[test]
    fn a_missing_or_unused_bind_is_an_error() {
        let missing = statement("SELECT $1, $2").bind::<Integer, _>(1);
        let unused = statement("SELECT 1").bind::<Integer, _>(1);
        let stray = statement("SELECT '$x'");
        for s in [missing, unused, stray] {
            let mut out = String::new();
            let r = std::fmt::Write::write_fmt(
                &mut out,
                format_args!("{}", diesel::debug_query::<Pg, _>(&s)),
            );
            assert!(r.is_err(), "{out}");
        }
    }
}
