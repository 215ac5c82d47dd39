//! The parser guard: what a statement must be before anything plans it.
//!
//! Text written by a person (analyst SQL, the console's workbench, `kvwatch query`, rule files)
//! passes here first. It must parse as exactly one plain query (`SELECT`/`WITH`/`VALUES`), and
//! its shape must stay within bounds that planning and execution can handle: expression
//! nesting (a chain of 2,000 `+`, `OR` or `||` is 2,000 levels deep, because the parser builds
//! binary operators left-deep) and the number of `UNION`/`INTERSECT`/`EXCEPT` terms. Deeper
//! statements are refused with a message that names the depth and the limit, so the person can
//! rewrite them (an `IN (…)` list instead of a long `OR` chain), instead of meeting a crash.
//!
//! The walk stops at the limit, so it never recurses deeper than the limit itself; nesting
//! through parentheses, function calls and subqueries is bounded earlier still by the parser's
//! own recursion limit (50).

use super::SqlError;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
pub use kvwatch_ingest::sqlshape::Shape;

/// Checks that `sql` is one read-only query within `shape` and returns it parsed. With
/// `explain`, `EXPLAIN [ANALYZE] <query>` is accepted too (for operators at the CLI: a plan
/// names the store's files, which analysts are not shown).
///
/// A refused statement may be very deep; dropping it would recurse as deep as it is nested.
/// Callers in a disposable process (the SQL worker) leak it instead: see [`Refusal`].
pub fn check(sql: &str, shape: Shape, explain: bool) -> Result<DfStatement, Refusal> {
    let mut statements = DFParser::parse_sql(sql).map_err(|e| {
        let text = match e.find_root() {
            datafusion::error::DataFusionError::SQL(p, _) => p.to_string(),
            other => other.to_string(),
        };
        Refusal::plain(SqlError::Refused(format!(
            "not valid SQL: {}",
            super::public_message(&text)
        )))
    })?;
    if statements.len() != 1 {
        let n = statements.len();
        return Err(Refusal::new(
            SqlError::Refused(format!("exactly one statement is allowed, found {n}")),
            statements.into_iter().collect(),
        ));
    }
    let statement = statements.pop_front().expect("one statement");
    let verdict = match &statement {
        DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {
            kvwatch_ingest::sqlshape::measure(s, shape).map_err(SqlError::TooComplex)
        }
        DfStatement::CopyTo(_) => Err(SqlError::Refused("COPY is not allowed".into())),
        DfStatement::CreateExternalTable(_) => Err(SqlError::Refused(
            "CREATE EXTERNAL TABLE is not allowed".into(),
        )),
        DfStatement::Explain(e) if explain => match &*e.statement {
            DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {
                kvwatch_ingest::sqlshape::measure(s, shape).map_err(SqlError::TooComplex)
            }
            _ => Err(SqlError::Refused(
                "only EXPLAIN [ANALYZE] of a SELECT query is allowed".into(),
            )),
        },
        DfStatement::Explain(_) => Err(SqlError::Refused(
            "only SELECT queries are allowed, not EXPLAIN".into(),
        )),
        DfStatement::Statement(s) => Err(SqlError::Refused(format!(
            "only SELECT queries are allowed, not {}",
            statement_verb(s)
        ))),
        _ => Err(SqlError::Refused(
            "only SELECT queries are allowed".to_owned(),
        )),
    };
    match verdict {
        Ok(()) => Ok(statement),
        Err(e) => Err(Refusal::new(e, vec![statement])),
    }
}

/// A refused statement, with the parsed text it was refused for. Dropping a `Refusal` drops
/// the statement normally; [`Refusal::leak`] forgets it instead, for a process that is about
/// to be replaced anyway and must not risk a deep recursive drop.
pub struct Refusal {
    pub error: SqlError,
    parsed: Vec<DfStatement>,
}

impl Refusal {
    fn plain(error: SqlError) -> Self {
        Self {
            error,
            parsed: Vec::new(),
        }
    }

    fn new(error: SqlError, parsed: Vec<DfStatement>) -> Self {
        Self { error, parsed }
    }

    /// Whether the refused text was parsed into a tree (that a drop would walk).
    pub fn holds_tree(&self) -> bool {
        !self.parsed.is_empty()
    }

    /// The error, forgetting the parsed statement without walking it.
    pub fn leak(self) -> SqlError {
        std::mem::forget(self.parsed);
        self.error
    }

    /// The error, dropping the parsed statement.
    pub fn into_error(self) -> SqlError {
        self.error
    }
}

/// The leading keyword(s) of a statement that is not a query, without printing the statement
/// (printing recurses through it).
fn statement_verb(s: &Statement) -> &'static str {
    match s {
        Statement::Insert(_) => "INSERT",
        Statement::Update { .. } => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView { .. } => "CREATE VIEW",
        Statement::Drop { .. } => "DROP",
        Statement::Set(_) => "SET",
        Statement::Copy { .. } => "COPY",
        Statement::Explain { .. } | Statement::ExplainTable { .. } => "EXPLAIN",
        _ => "this statement",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> SqlError {
        match check(sql, Shape::default(), false) {
            Ok(_) => panic!("{sql:.80} passed"),
            Err(r) => r.leak(),
        }
    }

    #[test]
    fn only_single_queries_pass() {
        for ok in [
            "SELECT 1",
            "select * from events where vault = 'x' limit 5",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1), (2)",
        ] {
            assert!(check(ok, Shape::default(), false).is_ok(), "{ok}");
        }
        for bad in [
            "COPY events TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO events SELECT * FROM events",
            "DROP TABLE events",
            "SET datafusion.execution.batch_size = 1",
            "SELECT 1; SELECT 2",
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "",
            "SELEC 1",
        ] {
            assert!(
                matches!(refused(bad), SqlError::Refused(_)),
                "{bad} was not refused as a statement"
            );
        }
    }

    #[test]
    fn operators_may_explain_a_query_and_nothing_else() {
        for ok in [
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT count(*) FROM events",
        ] {
            assert!(check(ok, Shape::default(), true).is_ok(), "{ok}");
        }
        for bad in [
            "EXPLAIN COPY events TO '/tmp/x.csv'",
            "EXPLAIN CREATE TABLE t AS SELECT 1",
            "EXPLAIN ANALYZE INSERT INTO events SELECT * FROM events",
        ] {
            match check(bad, Shape::default(), true) {
                Ok(_) => panic!("{bad} passed"),
                Err(r) => assert!(matches!(r.leak(), SqlError::Refused(_)), "{bad}"),
            }
        }
        let deep = format!("EXPLAIN SELECT {}", vec!["1"; 2000].join(" + "));
        match check(&deep, Shape::default(), true) {
            Ok(_) => panic!("a deep EXPLAIN passed"),
            Err(r) => assert!(matches!(r.leak(), SqlError::TooComplex(_))),
        }
    }

    #[test]
    fn deep_shapes_are_refused_with_the_limit_named() {
        let chain = |op: &str, n: usize| format!("SELECT {}", vec!["1"; n].join(op));
        for sql in [
            chain(" + ", 2000),
            chain(" OR ", 5000),
            chain(" || ", 20000),
            chain(" AND ", 300),
            format!("SELECT {}", vec!["'a'"; 400].join(" || ")),
            vec!["SELECT 1"; 500].join(" UNION ALL "),
            format!(
                "SELECT * FROM events WHERE {}",
                (0..600)
                    .map(|i| format!("vault = 'v{i}'"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            ),
        ] {
            match refused(&sql) {
                SqlError::TooComplex(m) => assert!(m.contains("256"), "{m}"),
                other => panic!("{sql:.60}: {other}"),
            }
        }
        // Nesting through parentheses and calls stops at the parser's recursion limit.
        let parens = format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200));
        let calls = format!("SELECT {}1{}", "abs(".repeat(200), ")".repeat(200));
        for sql in [parens, calls] {
            assert!(matches!(refused(&sql), SqlError::Refused(_)), "{sql:.40}");
        }
        // Within the limits, long but shallow statements pass.
        let wide_in = format!(
            "SELECT * FROM events WHERE vault IN ({})",
            (0..20_000)
                .map(|i| format!("'v{i}'"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(check(&wide_in, Shape::default(), false).is_ok());
        assert!(check(&chain(" + ", 200), Shape::default(), false).is_ok());
        assert!(
            check(
                &vec!["SELECT 1"; 200].join(" UNION ALL "),
                Shape::default(),
                false
            )
            .is_ok()
        );
    }
}
