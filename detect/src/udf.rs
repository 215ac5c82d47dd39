//! SQL functions rules need that DataFusion lacks: IP/CIDR containment and prefix length.
//!
//! `ip_in_cidrs(ip, cidr, ...)` is true when `ip` lies in any listed range (IPv4 or IPv6;
//! a bare address is a /32 or /128). Unparseable values (`<Redacted>`, empty) never match.
//! `cidr_prefix(text)` is the prefix length of a range written `a.b.c.d/n`, or of a bare
//! address (32/128), and null when the text is not a range.

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use std::net::IpAddr;
use std::sync::Arc;

/// An address range as (bits, network, prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v6: bool,
    net: u128,
    len: u8,
}

fn addr_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (false, u32::from(v4) as u128),
            None => (true, u128::from(a)),
        },
    }
}

fn mask(v6: bool, len: u8) -> u128 {
    let width = if v6 { 128 } else { 32 };
    if len == 0 {
        0
    } else {
        let all: u128 = if v6 { u128::MAX } else { u32::MAX as u128 };
        let host = (1u128 << (width - len as u32)) - 1;
        all & !host
    }
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::/n` or a bare address.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let (v6, bits) = addr_bits(addr.parse::<IpAddr>().ok()?);
        let width = if v6 { 128 } else { 32 };
        let len = len.unwrap_or(width);
        if len > width {
            return None;
        }
        Some(Cidr {
            v6,
            net: bits & mask(v6, len),
            len,
        })
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Is `ip` (an address, or a range that must lie wholly inside) in this range?
    pub fn contains(&self, ip: &str) -> bool {
        let Some(other) = Cidr::parse(ip) else {
            return false;
        };
        other.v6 == self.v6
            && other.len >= self.len
            && other.net & mask(self.v6, self.len) == self.net
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IpInCidrs {
    sig: Signature,
}

impl ScalarUDFImpl for IpInCidrs {
    fn name(&self) -> &str {
        "ip_in_cidrs"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    /// A call whose ranges are all literals and none of them a range (the pack's default, an
    /// empty list) is `false` for every row: planned as a constant, a rule filtering on it
    /// reads nothing instead of testing every event's address.
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let [_, ranges @ ..] = args.as_slice() else {
            return Ok(ExprSimplifyResult::Original(args));
        };
        let no_range = ranges.iter().all(|a| match a {
            Expr::Literal(v, _) => v
                .try_as_str()
                .is_some_and(|s| s.and_then(Cidr::parse).is_none()),
            _ => false,
        });
        Ok(if no_range {
            ExprSimplifyResult::Simplified(datafusion::prelude::lit(false))
        } else {
            ExprSimplifyResult::Original(args)
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let strings: Vec<ArrayRef> = arrays
            .iter()
            .map(|a| cast(a, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let col = |i: usize| {
            strings[i]
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8")
        };
        let ips = col(0);
        // Ranges are literals in practice: parse them once from the first row.
        let ranges_const = args.args[1..]
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let parse_row = |row: usize| -> Vec<Cidr> {
            (1..strings.len())
                .filter_map(|i| {
                    let c = col(i);
                    (!c.is_null(row))
                        .then(|| Cidr::parse(c.value(row)))
                        .flatten()
                })
                .collect()
        };
        let fixed = if ranges_const && n > 0 {
            parse_row(0)
        } else {
            Vec::new()
        };
        let out: BooleanArray = (0..n)
            .map(|row| {
                if ips.is_null(row) {
                    return Some(false);
                }
                let ip = ips.value(row);
                let hit = if ranges_const {
                    fixed.iter().any(|c| c.contains(ip))
                } else {
                    parse_row(row).iter().any(|c| c.contains(ip))
                };
                Some(hit)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CidrPrefix {
    sig: Signature,
}

impl ScalarUDFImpl for CidrPrefix {
    fn name(&self) -> &str {
        "cidr_prefix"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let s = cast(&arrays[0], &DataType::Utf8)?;
        let s = s.as_any().downcast_ref::<StringArray>().expect("Utf8");
        let out: Int32Array = s
            .iter()
            .map(|v| v.and_then(Cidr::parse).map(|c| c.prefix_len() as i32))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Registers the functions on a context.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(IpInCidrs {
        sig: Signature::variadic(vec![DataType::Utf8], Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::from(CidrPrefix {
        sig: Signature::uniform(1, vec![DataType::Utf8], Volatility::Immutable),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3"));
        assert!(!c.contains("10.2.0.1"));
        assert!(!c.contains("<Redacted>"));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8"));
        assert!(Cidr::parse("203.0.113.9").unwrap().contains("203.0.113.9"));
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::1")
        );
        assert!(!Cidr::parse("2001:db8::/32").unwrap().contains("10.0.0.1"));
        assert_eq!(Cidr::parse("1.2.3.4/33"), None);
        assert!(c.contains("10.1.2.0/24"));
        assert!(!c.contains("10.0.0.0/8"));
        assert_eq!(Cidr::parse("1.2.3.0/24").unwrap().prefix_len(), 24);
    }

    #[tokio::test]
    async fn functions_in_sql() {
        let ctx = SessionContext::new();
        register(&ctx);
        let df = ctx
            .sql("SELECT ip_in_cidrs('10.0.0.7', '192.168.0.0/16', '10.0.0.0/8') AS a, ip_in_cidrs('x', '10.0.0.0/8') AS b, cidr_prefix('0.0.0.0/0') AS c, cidr_prefix('nope') AS d")
            .await
            .unwrap();
        let b = df.collect().await.unwrap();
        let row = &b[0];
        let bools = |i: usize| {
            row.column(i)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .value(0)
        };
        assert!(bools(0));
        assert!(!bools(1));
        let ints = |i: usize| {
            row.column(i)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .clone()
        };
        assert_eq!(ints(2).value(0), 0);
        assert!(ints(3).is_null(0));
    }

    /// Literal lists without a single range are planned as `false`; the same call with a
    /// range, or with ranges from a column, still tests every row.
    #[tokio::test]
    async fn a_list_without_ranges_is_planned_as_false() {
        let ctx = SessionContext::new();
        register(&ctx);
        let t =
            "(VALUES ('10.0.0.7', '10.0.0.0/8'), (NULL, 'x'), ('<Redacted>', NULL)) AS t(ip, r)";
        for (ranges, planned, rows) in [
            ("'kvwatch-empty-list'", false, 0),
            ("'nope', '10.0.0.0/8'", true, 1),
            ("r", true, 1),
        ] {
            let sql = format!("SELECT ip FROM {t} WHERE ip_in_cidrs(ip, {ranges})");
            let df = ctx.sql(&sql).await.unwrap();
            let n: usize = df
                .clone()
                .collect()
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum();
            let plan = df
                .into_optimized_plan()
                .unwrap()
                .display_indent()
                .to_string();
            assert_eq!(plan.contains("ip_in_cidrs"), planned, "{sql}: {plan}");
            assert_eq!(n, rows, "{sql}");
        }
    }
}
