//! Shape limits of a SQL statement, checked before anything plans it.
//!
//! The parser builds binary operators left-deep, so a chain of 2,000 `+`, `OR` or `||` is a
//! tree 2,000 levels deep, and so is a chain of 500 `UNION ALL`s; the planner and the
//! optimiser walk such trees recursively. [`measure`] refuses statements deeper than the
//! limits with a message that names the limit, stopping its own walk at the limit (so it never
//! recurses deeper than that itself). Analyst SQL (`kvwatch-api`'s guard) and rule files (the
//! detection engine's load-time check) both pass here.

use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Statement, Visit, Visitor};
use std::ops::ControlFlow;

/// Shape limits of one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Deepest expression nesting, counting every operator, function and subquery level.
    pub max_depth: usize,
    /// Most `UNION`/`INTERSECT`/`EXCEPT` terms in one query.
    pub max_set_terms: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            max_depth: 256,
            max_set_terms: 256,
        }
    }
}

/// Walks `s` and fails at the first place deeper than `shape` allows.
pub fn measure(s: &Statement, shape: Shape) -> Result<(), String> {
    let mut m = Measure { shape, depth: 0 };
    match s.visit(&mut m) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Measure {
    shape: Shape,
    depth: usize,
}

impl Measure {
    fn enter(&mut self) -> ControlFlow<String> {
        self.depth += 1;
        if self.depth > self.shape.max_depth {
            return ControlFlow::Break(format!(
                "the statement nests expressions more than {} levels deep (the limit); \
                 write long OR chains as IN (…) lists and split long concatenations",
                self.shape.max_depth
            ));
        }
        ControlFlow::Continue(())
    }

    fn leave(&mut self) -> ControlFlow<String> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

/// Terms of a query's set operations (`a UNION b UNION c` has 3), counted without recursion
/// and without descending into parenthesised subqueries (the visitor meets those itself).
fn set_terms(q: &Query, limit: usize) -> usize {
    let mut terms = 0;
    let mut stack: Vec<&SetExpr> = vec![&q.body];
    while let Some(e) = stack.pop() {
        match e {
            SetExpr::SetOperation { left, right, .. } => {
                stack.push(left);
                stack.push(right);
            }
            _ => terms += 1,
        }
        if terms > limit {
            break;
        }
    }
    terms
}

impl Visitor for Measure {
    type Break = String;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<String> {
        let terms = set_terms(q, self.shape.max_set_terms);
        if terms > self.shape.max_set_terms {
            return ControlFlow::Break(format!(
                "the query combines more than {} UNION/INTERSECT/EXCEPT terms (the limit)",
                self.shape.max_set_terms
            ));
        }
        // A set-operation chain is as deep as it has terms: the planner walks it left-deep.
        self.depth += terms.saturating_sub(1);
        self.enter()
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<String> {
        let terms = set_terms(q, self.shape.max_set_terms);
        self.depth = self.depth.saturating_sub(terms.saturating_sub(1));
        self.leave()
    }

    fn pre_visit_expr(&mut self, _e: &Expr) -> ControlFlow<String> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _e: &Expr) -> ControlFlow<String> {
        self.leave()
    }
}
