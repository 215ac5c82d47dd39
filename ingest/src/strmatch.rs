//! Suffix matches (`s LIKE '%Get'`, `ends_with(s, 'Get')`) over string views without a byte
//! per row.
//!
//! Hunting queries and rules pick reads with `operation LIKE '%Get'`. Arrow's kernel for a
//! suffix over string views collects one `bool` per row into a vector and packs it afterwards;
//! in `EXPLAIN ANALYZE` and `perf` that was about a fifth of a `GROUP BY` over the store's
//! reads, and most of a filtered `count(*)`. [`FastEndsWith`] packs the bits as it goes and
//! compares the suffix of an inline view (12 bytes or fewer) as one masked integer.
//!
//! [`LikeSuffix`] (a logical optimizer rule) rewrites `s LIKE '%lit'` (no other wildcard, no
//! escape, case-sensitive) in filters to `ends_with(s, 'lit')`, which [`register`] makes
//! this module's function. Patterns with a fixed prefix stay `LIKE`: the Parquet reader can
//! prune on them. Every other input type goes to DataFusion's own `ends_with`.

use datafusion::arrow::array::{Array, BooleanArray, StringViewArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// DataFusion's `ends_with`, with a bit-packing kernel for a string-view column and a
/// constant suffix.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FastEndsWith {
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for FastEndsWith {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(a), ColumnarValue::Scalar(suffix)] = args.args.as_slice()
            && let Some(views) = a.as_any().downcast_ref::<StringViewArray>()
            && let Some(suffix) = string_of(suffix)
        {
            return Ok(ColumnarValue::Array(Arc::new(ends_with_views(
                views,
                suffix.as_bytes(),
            ))));
        }
        // Dictionary-encoded strings as their values: DataFusion's function finds no common
        // type for a dictionary and a string (the rule may put one here).
        let mut args = args;
        for a in &mut args.args {
            if let ColumnarValue::Array(arr) = a
                && let DataType::Dictionary(_, value) = arr.data_type()
            {
                *a = ColumnarValue::Array(cast(arr, value)?);
            }
        }
        self.inner.invoke_with_args(args)
    }
}

/// The string of a non-null string scalar.
fn string_of(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s),
        _ => None,
    }
}

/// Whether each string of `a` ends with `suffix` (NULL where `a` is).
fn ends_with_views(a: &StringViewArray, suffix: &[u8]) -> BooleanArray {
    let n = suffix.len();
    if n == 0 {
        return BooleanArray::new(BooleanBuffer::new_set(a.len()), a.logical_nulls());
    }
    let views = a.views();
    let buffers = a.data_buffers();
    // A view of a string of up to 12 bytes holds the length in its low 32 bits and the bytes
    // after it; the suffix is the `n` bytes ending at byte `4 + len`.
    let inline = (n <= 12).then(|| {
        let mut b = [0u8; 16];
        b[..n].copy_from_slice(suffix);
        (u128::from_le_bytes(b), (1u128 << (8 * n)) - 1)
    });
    let values = BooleanBuffer::collect_bool(a.len(), |i| {
        let v = views[i];
        let len = v as u32 as usize;
        if len < n {
            return false;
        }
        if len <= 12 {
            return match inline {
                Some((want, mask)) => (v >> (32 + 8 * (len - n))) & mask == want,
                None => false,
            };
        }
        let buffer = (v >> 64) as u32 as usize;
        let offset = (v >> 96) as u32 as usize;
        let end = offset + len;
        let data = buffers[buffer].as_slice();
        // The 16 bytes ending at the string's end (they may begin inside the string before
        // it, in the same buffer): the suffix is their top `n` bytes.
        if let (Some((want, _)), Some(last)) = (inline, end.checked_sub(16).map(|s| &data[s..end]))
        {
            let last = u128::from_le_bytes(last.try_into().expect("16 bytes"));
            return last >> (8 * (16 - n)) == want;
        }
        data[end - n..end] == *suffix
    });
    BooleanArray::new(values, a.logical_nulls())
}

/// `s LIKE '%lit'` in filters as `ends_with(s, 'lit')`.
#[derive(Debug)]
pub struct LikeSuffix {
    ends_with: Arc<ScalarUDF>,
}

impl OptimizerRule for LikeSuffix {
    fn name(&self) -> &str {
        "like_suffix"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // Filters and the filters pushed into scans only: their output has no name to keep.
        match plan {
            LogicalPlan::Filter(_) | LogicalPlan::TableScan(_) => {
                plan.map_expressions(|e| e.transform_up(|e| self.rewrite_like(e)))
            }
            _ => Ok(Transformed::no(plan)),
        }
    }
}

impl LikeSuffix {
    fn rewrite_like(&self, e: Expr) -> Result<Transformed<Expr>> {
        let Expr::Like(Like {
            negated,
            expr,
            pattern,
            escape_char: None,
            case_insensitive: false,
        }) = &e
        else {
            return Ok(Transformed::no(e));
        };
        let Expr::Literal(p, _) = pattern.as_ref() else {
            return Ok(Transformed::no(e));
        };
        let Some(suffix) = string_of(p).and_then(like_suffix) else {
            return Ok(Transformed::no(e));
        };
        let call = Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::clone(&self.ends_with),
            vec![
                expr.as_ref().clone(),
                Expr::Literal(ScalarValue::Utf8(Some(suffix.to_owned())), None),
            ],
        ));
        Ok(Transformed::yes(if *negated {
            Expr::Not(Box::new(call))
        } else {
            call
        }))
    }
}

/// The literal of a pattern `%lit` (`lit` non-empty, with no `%`, `_` or `\`).
fn like_suffix(pattern: &str) -> Option<&str> {
    let lit = pattern.strip_prefix('%')?;
    (!lit.is_empty() && !lit.contains(['%', '_', '\\'])).then_some(lit)
}

/// Makes `ctx`'s `ends_with` this module's function.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ends_with());
}

fn ends_with() -> ScalarUDF {
    ScalarUDF::new_from_impl(FastEndsWith {
        inner: datafusion::functions::string::ends_with(),
    })
}

/// The optimizer rule, calling the same function [`register`] registers.
pub fn rule() -> Arc<dyn OptimizerRule + Send + Sync> {
    Arc::new(LikeSuffix {
        ends_with: Arc::new(ends_with()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::text;
    use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;

    #[test]
    fn suffixes_of_inline_and_long_views() {
        let strings = [
            Some("SecretGet"),
            Some("Get"),
            Some("et"),
            None,
            Some(""),
            Some("CertificateGet"),
            Some("CertificateGetX"),
            Some("VaultGetGet"),
            Some("123456789Get"),
            Some("1234567890Get"),
            Some("ééGet"),
        ];
        let plain = StringArray::from(strings.to_vec());
        let views = StringViewArray::from(strings.to_vec());
        for suffix in [
            "Get",
            "t",
            "tGet",
            "9Get",
            "CertificateGet",
            "123456789Get",
            "éGet",
            "x",
        ] {
            let want = datafusion::arrow::compute::kernels::comparison::ends_with(
                &plain,
                &StringArray::new_scalar(suffix),
            )
            .unwrap();
            assert_eq!(ends_with_views(&views, suffix.as_bytes()), want, "{suffix}");
        }
        // A slice of the array starts its views and nulls at the slice.
        let sliced = views.slice(5, 5);
        let want = datafusion::arrow::compute::kernels::comparison::ends_with(
            &plain.slice(5, 5),
            &StringArray::new_scalar("Get"),
        )
        .unwrap();
        assert_eq!(ends_with_views(&sliced, b"Get"), want);
    }

    #[test]
    fn only_pure_suffix_patterns_are_rewritten() {
        assert_eq!(like_suffix("%Get"), Some("Get"));
        assert_eq!(like_suffix("%"), None);
        assert_eq!(like_suffix("Get%"), None);
        assert_eq!(like_suffix("%G_t"), None);
        assert_eq!(like_suffix("%a%b"), None);
        assert_eq!(like_suffix("%a\\%"), None);
    }

    /// The store's sessions and plain DataFusion give the same rows for LIKE and `ends_with`
    /// over views and plain strings, and the store's session plans `ends_with` for `%lit`.
    #[tokio::test]
    async fn like_suffix_agrees_with_datafusion() {
        let strings: Vec<Option<String>> = (0..3000)
            .map(|i| match i % 7 {
                0 => None,
                1 => Some(format!("Secret{}Get", i % 13)),
                2 => Some(format!("CertificateIssuer{}Get", i % 5)),
                3 => Some("Get".into()),
                4 => Some(format!("KeyList{i}")),
                5 => Some("ends_with_%_Get".into()),
                _ => Some(format!("x{}", i % 3)),
            })
            .collect();
        let plain: ArrayRef = Arc::new(StringArray::from(strings));
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("v", DataType::Utf8View, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![plain.clone(), cast(&plain, &DataType::Utf8View).unwrap()],
        )
        .unwrap();
        let table = || {
            Arc::new(
                MemTable::try_new(
                    schema.clone(),
                    vec![vec![batch.slice(0, 1500)], vec![batch.slice(1500, 1500)]],
                )
                .unwrap(),
            )
        };
        let theirs = SessionContext::new();
        let ours = crate::query::empty_context();
        theirs.register_table("t", table()).unwrap();
        ours.register_table("t", table()).unwrap();
        for c in ["s", "v"] {
            for cond in [
                format!("{c} LIKE '%Get'"),
                format!("{c} NOT LIKE '%Get'"),
                format!("{c} LIKE '%1Get'"),
                format!("{c} LIKE '%_Get'"),
                format!("{c} LIKE '%\\%_Get'"),
                format!("{c} ILIKE '%get'"),
                format!("ends_with({c}, '3Get')"),
                format!("ends_with({c}, 'IssuerGet') OR {c} LIKE '%Get'"),
            ] {
                let sql = format!("SELECT count(*) AS n, count({c}) AS m FROM t WHERE {cond}");
                assert_eq!(text(&ours, &sql).await, text(&theirs, &sql).await, "{sql}");
            }
        }
        let plan = text(&ours, "EXPLAIN SELECT count(*) FROM t WHERE v LIKE '%Get'").await;
        assert!(plan.contains("ends_with(t.v, Utf8(\"Get\"))"), "{plan}");
        assert!(!plan.contains("LIKE"), "{plan}");
    }
}
