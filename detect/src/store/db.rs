//! The two databases the alert store runs on, behind one small interface.
//!
//! The store's logic (folding, the change feed, triage, the sinks' outbox, coverage) is
//! written once against [`Sql`]: statements with numbered `?N` parameters, values as [`Val`],
//! rows as [`Row`]. [`Db::Sqlite`] (the embedded default, one file beside the data) runs them
//! as written; [`Db::Postgres`] (a server shared by every node of a deployment) rewrites the
//! parameters to `$N` once per statement and keeps the prepared statement for the session.
//! Where the dialects differ in more than parameter syntax (full-text search, row IDs,
//! triggers), the caller asks [`Sql::dialect`] and says it both ways.

use super::{AlertStoreError, Result};
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use std::collections::HashMap;

/// Which SQL a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl From<usize> for Val {
    fn from(v: usize) -> Self {
        Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_owned())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// Parameters of a statement: `vals![a, b]` is `&[Val::from(a), Val::from(b)]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::store::db::Val::from($v)),*][..] };
}
pub(crate) use vals;

/// One result row.
#[derive(Debug)]
pub struct Row(Vec<Val>);

/// A Rust type a column converts to.
pub trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
    const NAME: &'static str;
}
impl FromVal for i64 {
    const NAME: &'static str = "integer";
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Int(i) => Some(*i),
            Val::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}
impl FromVal for bool {
    const NAME: &'static str = "boolean";
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Int(i) => Some(*i != 0),
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }
}
impl FromVal for String {
    const NAME: &'static str = "text";
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl<T: FromVal> FromVal for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Null => Some(None),
            v => T::from_val(v).map(Some),
        }
    }
}

impl Row {
    /// Column `i` as `T`; a missing column or a value of another type is an error, not a
    /// default.
    pub fn get<T: FromVal>(&self, i: usize) -> Result<T> {
        self.0
            .get(i)
            .and_then(T::from_val)
            .ok_or_else(|| AlertStoreError::Column {
                index: i,
                want: T::NAME,
                found: format!("{:?}", self.0.get(i)),
            })
    }

    /// Every column, taken out of the row.
    pub fn take_all(&mut self) -> Vec<Val> {
        std::mem::take(&mut self.0)
    }

    /// Takes column `i` out of the row as text (no copy).
    pub fn take_text(&mut self, i: usize) -> Result<String> {
        match self.0.get_mut(i) {
            Some(Val::Text(s)) => Ok(std::mem::take(s)),
            other => Err(AlertStoreError::Column {
                index: i,
                want: "text",
                found: format!("{other:?}"),
            }),
        }
    }
}

/// What the store's logic needs of a connection or a transaction.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64>;
    /// Runs a query; every row.
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>>;
    /// Runs a query; its first row, if any.
    fn one(&mut self, sql: &str, params: &[Val]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// The one leadership lease kvwatch takes (the `lease` module takes and renews it).
pub const LEADER: &str = "leader";

/// A node's claim on the leadership: who, and under which epoch. A connection fenced with one
/// ([`Db::fence`]) makes every write transaction check it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub holder: String,
    pub epoch: i64,
}

/// Inside a write transaction: fails unless `claim` still holds the unexpired lease, and
/// holds the lease row (shared) to commit, so a take-over waits for this transaction.
fn check_fence(tx: &mut dyn Sql, claim: &Claim) -> Result<()> {
    let held = tx.one(
        "SELECT 1 FROM kvwatch_lease WHERE name = ?1 AND holder = ?2 AND epoch = ?3
           AND expires_ms > kvwatch_now_ms() FOR SHARE",
        &[
            Val::from(LEADER),
            Val::from(&claim.holder),
            Val::Int(claim.epoch),
        ],
    )?;
    match held {
        Some(_) => Ok(()),
        None => Err(AlertStoreError::Fenced {
            holder: claim.holder.clone(),
            epoch: claim.epoch,
        }),
    }
}

/// An open alert-store database.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<std::sync::Mutex<PgConn>>),
}

impl Db {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Makes every later transaction check that `claim` still holds the leadership lease.
    pub fn fence(&self, claim: Claim) {
        if let Db::Postgres(m) = self {
            m.lock().unwrap_or_else(|p| p.into_inner()).fence = Some(claim);
        }
    }

    /// Runs `f` on the connection, outside a transaction (each statement commits alone).
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match self {
            Db::Sqlite(c) => f(&mut Lite(c)),
            Db::Postgres(m) => blocking(|| {
                let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
                let PgConn { client, cache, .. } = &mut *g;
                f(&mut Pg {
                    c: client.as_mut().expect("open until dropped"),
                    cache,
                })
            }),
        }
    }

    /// Runs `f` in one transaction, committed when `f` returns `Ok` and rolled back otherwise.
    pub fn tx<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match self {
            Db::Sqlite(c) => {
                let tx = c.unchecked_transaction()?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Db::Postgres(m) => blocking(|| {
                let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
                let PgConn {
                    client,
                    cache,
                    fence,
                } = &mut *g;
                let mut tx = client.as_mut().expect("open until dropped").transaction()?;
                let mut sql = Pg { c: &mut tx, cache };
                if let Some(claim) = fence {
                    check_fence(&mut sql, claim)?;
                }
                let out = f(&mut sql)?;
                tx.commit()?;
                Ok(out)
            }),
        }
    }
}

struct Lite<'a>(&'a rusqlite::Connection);

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Val::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn lite_val(v: rusqlite::types::ValueRef<'_>) -> Val {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(f) => Val::Text(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params))? as u64)
    }
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(lite_val(r.get_ref(i)?));
            }
            out.push(Row(vals));
        }
        Ok(out)
    }
}

/// Runs `f`, which blocks on the synchronous PostgreSQL client, where that is allowed: the
/// client drives its connection with a runtime of its own, which cannot start on a thread
/// that is running async tasks. On such a thread (a command's async body, the detection
/// loop) the worker hands its tasks to another thread for the duration; on a blocking or a
/// plain thread `f` just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A PostgreSQL session and the statements it has prepared.
pub struct PgConn {
    client: Option<postgres::Client>,
    cache: HashMap<String, postgres::Statement>,
    /// The lease every write transaction must still hold.
    fence: Option<Claim>,
}

impl PgConn {
    pub fn new(client: postgres::Client) -> Self {
        Self {
            client: Some(client),
            cache: HashMap::new(),
            fence: None,
        }
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing the session blocks too.
        if let Some(c) = self.client.take() {
            blocking(move || drop(c));
        }
    }
}

struct Pg<'a, C: postgres::GenericClient> {
    c: &'a mut C,
    cache: &'a mut HashMap<String, postgres::Statement>,
}

/// `?N` parameters as PostgreSQL's `$N`. The store's statements never carry a `?` in a
/// string literal or use PostgreSQL's `?` operators, so a plain rewrite is exact.
pub fn pg_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut it = sql.chars().peekable();
    while let Some(c) = it.next() {
        if c == '?' && it.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl<C: postgres::GenericClient> Pg<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let st = self.c.prepare(&pg_params(sql))?;
        self.cache.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

fn pg_refs(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl<C: postgres::GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let st = self.statement(sql)?;
        Ok(self.c.execute(&st, &pg_refs(params))?)
    }
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        let st = self.statement(sql)?;
        let rows = self.c.query(&st, &pg_refs(params))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Val>(i).map_err(AlertStoreError::from))
                    .collect::<Result<Vec<Val>>>()
                    .map(Row)
            })
            .collect()
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, BoxError> {
        match (self, ty) {
            (Val::Null, _) => Ok(IsNull::Yes),
            (Val::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Val::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Val::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Val::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Val::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (Val::Bool(b), &Type::INT8) => i64::from(*b).to_sql(ty, out),
            (Val::Bool(b), &Type::INT4) => i32::from(*b).to_sql(ty, out),
            (Val::Text(s), _) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            (v, ty) => Err(format!("cannot send {v:?} as a PostgreSQL {ty}").into()),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Val {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Val::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Val::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Val::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Val::Bool(bool::from_sql(ty, raw)?),
            _ => Val::Text(String::from_sql(ty, raw)?),
        })
    }
    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Val::Null)
    }
    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL)
            || <String as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollar_parameters() {
        assert_eq!(
            pg_params("SELECT a FROM t WHERE x = ?1 AND y IN (?12, ?2) AND z = '?'"),
            "SELECT a FROM t WHERE x = $1 AND y IN ($12, $2) AND z = '?'"
        );
    }
}
