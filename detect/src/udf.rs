//! SQL functions rules need that DataFusion lacks: IP/CIDR containment and prefix length.
//!
//! `ip_in_cidrs(ip, cidr, ...)` is true when `ip` lies in any listed range (IPv4 or IPv6;
//! a bare address is a /32 or /128). Unparseable values (`<Redacted>`, empty) never match.
//! `cidr_prefix(text)` is the prefix length of a range written `a.b.c.d/n`, or of a bare
//! address (32/128), and null when the text is not a range.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

/// An address range as (bits, network, prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
        Cidr::parse(ip).is_some_and(|other| self.covers(&other))
    }

    /// Does `other` lie wholly inside this range?
    fn covers(&self, other: &Cidr) -> bool {
        other.v6 == self.v6
            && other.len >= self.len
            && other.net & mask(self.v6, self.len) == self.net
    }
}

/// A list of ranges grouped by family and prefix length: whether an address lies in any of them
/// is a mask and a hash probe per distinct length, however long the list. Threat-intelligence
/// lists are long (a TOR exit list is a couple of thousand addresses) and every event's
/// address is tested against them.
#[derive(Debug)]
pub struct CidrSet {
    /// The ranges, sorted and without repeats (what two sets are compared by).
    ranges: Vec<Cidr>,
    /// (IPv6?, prefix length, networks of that length).
    lengths: Vec<(bool, u8, HashSet<u128>)>,
}

impl CidrSet {
    pub fn new(ranges: impl IntoIterator<Item = Cidr>) -> Self {
        let mut ranges: Vec<Cidr> = ranges.into_iter().collect();
        ranges.sort_unstable();
        ranges.dedup();
        let mut lengths: Vec<(bool, u8, HashSet<u128>)> = Vec::new();
        for r in &ranges {
            match lengths
                .iter_mut()
                .find(|(v6, len, _)| *v6 == r.v6 && *len == r.len)
            {
                Some((_, _, nets)) => {
                    nets.insert(r.net);
                }
                None => lengths.push((r.v6, r.len, HashSet::from([r.net]))),
            }
        }
        CidrSet { ranges, lengths }
    }

    /// Is `ip` (an address, or a range that must lie wholly inside) in any of the ranges?
    pub fn contains(&self, ip: &str) -> bool {
        let Some(other) = Cidr::parse(ip) else {
            return false;
        };
        self.lengths.iter().any(|(v6, len, nets)| {
            *v6 == other.v6 && *len <= other.len && nets.contains(&(other.net & mask(*v6, *len)))
        })
    }
}

/// The rows of a string array of any of Arrow's three string types.
fn strings(a: &ArrayRef) -> Result<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Ok(match a.data_type() {
        DataType::Utf8 => Box::new(a.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(a.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(a.as_string_view().iter()),
        DataType::Null => Box::new((0..a.len()).map(|_| None)),
        other => return exec_err!("expected strings, got {other}"),
    })
}

/// Every argument a string (of any string type) or NULL, kept as it is: the store's columns
/// are string views, and casting each batch to another string type would copy it.
fn string_args(name: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    types
        .iter()
        .map(|t| match t {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                Ok(t.clone())
            }
            other => plan_err!("{name} takes strings, got {other}"),
        })
        .collect()
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
    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        if types.is_empty() {
            return plan_err!("ip_in_cidrs takes an address and ranges");
        }
        string_args(self.name(), types)
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    /// Ranges that are all literals (every rule's lists) are parsed once, while planning, into
    /// a [`CidrSet`]; with no range among them (the pack's default, an empty list) the call is
    /// `false` for every row, and a rule filtering on it reads nothing.
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let [ip, ranges @ ..] = args.as_slice() else {
            return Ok(ExprSimplifyResult::Original(args));
        };
        let mut parsed = Vec::with_capacity(ranges.len());
        for a in ranges {
            let Expr::Literal(v, _) = a else {
                return Ok(ExprSimplifyResult::Original(args));
            };
            let Some(text) = v.try_as_str() else {
                return Ok(ExprSimplifyResult::Original(args));
            };
            parsed.extend(text.and_then(Cidr::parse));
        }
        if parsed.is_empty() {
            return Ok(ExprSimplifyResult::Simplified(datafusion::prelude::lit(
                false,
            )));
        }
        let listed = ScalarUDF::from(IpInListed {
            sig: Signature::user_defined(Volatility::Immutable),
            set: Arc::new(CidrSet::new(parsed)),
        });
        Ok(ExprSimplifyResult::Simplified(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(listed), vec![ip.clone()]),
        )))
    }
    /// Ranges from columns: each row's own ranges.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut columns = arrays.iter().map(strings).collect::<Result<Vec<_>>>()?;
        let (ips, ranges) = columns.split_first_mut().expect("an address column");
        let out: BooleanArray = ips
            .map(|ip| {
                let row: Vec<Cidr> = ranges
                    .iter_mut()
                    .filter_map(|c| c.next().flatten().and_then(Cidr::parse))
                    .collect();
                let ip = ip.and_then(Cidr::parse);
                Some(ip.is_some_and(|ip| row.iter().any(|r| r.covers(&ip))))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `ip_in_cidrs(ip, <literal ranges>)` once its ranges are parsed: one argument, the set built
/// while planning.
#[derive(Debug)]
struct IpInListed {
    sig: Signature,
    set: Arc<CidrSet>,
}

impl PartialEq for IpInListed {
    fn eq(&self, other: &Self) -> bool {
        self.set.ranges == other.set.ranges
    }
}

impl Eq for IpInListed {}

impl std::hash::Hash for IpInListed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.set.ranges.hash(state);
    }
}

impl ScalarUDFImpl for IpInListed {
    /// The name analysts wrote; EXPLAIN shows the address argument only.
    fn name(&self) -> &str {
        "ip_in_cidrs"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        if types.len() != 1 {
            return plan_err!("ip_in_cidrs over a parsed list takes one address");
        }
        string_args(self.name(), types)
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(v) => {
                let hit = v
                    .try_as_str()
                    .flatten()
                    .is_some_and(|ip| self.set.contains(ip));
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(hit))))
            }
            ColumnarValue::Array(a) => {
                let out: BooleanArray = strings(a)?
                    .map(|ip| Some(ip.is_some_and(|ip| self.set.contains(ip))))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
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
    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        if types.len() != 1 {
            return plan_err!("cidr_prefix takes one range");
        }
        string_args(self.name(), types)
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: Int32Array = strings(&arrays[0])?
            .map(|v| v.and_then(Cidr::parse).map(|c| c.prefix_len() as i32))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Registers the functions on a context.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(IpInCidrs {
        sig: Signature::user_defined(Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::from(CidrPrefix {
        sig: Signature::user_defined(Volatility::Immutable),
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

    /// A set answers as testing each of its ranges in turn does: IPv4 and IPv6 ranges of every
    /// length, repeats, and probes inside, beside and outside them (addresses, ranges,
    /// IPv4-mapped IPv6, text that is no address).
    #[test]
    fn a_set_answers_as_its_ranges_do() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ranges = Vec::new();
        let mut probes = vec![
            "<Redacted>".to_string(),
            String::new(),
            "10.0.0.0/33".into(),
        ];
        for i in 0..400 {
            let (text, v6) = if i % 3 == 0 {
                let a = std::net::Ipv6Addr::from(((next() as u128) << 64) | next() as u128);
                (a.to_string(), true)
            } else {
                // Few distinct first octets, so that ranges nest and probes land in them.
                let a = std::net::Ipv4Addr::from((next() as u32 & 0x0fff_ffff) | 0x0a00_0000);
                (a.to_string(), false)
            };
            let len = next() % if v6 { 129 } else { 33 };
            ranges.push(format!("{text}/{len}"));
            probes.push(text.clone());
            probes.push(format!("{text}/{}", next() % if v6 { 129 } else { 33 }));
            if !v6 {
                probes.push(format!("::ffff:{text}"));
                let near = std::net::Ipv4Addr::from(
                    u32::from(text.parse::<std::net::Ipv4Addr>().unwrap())
                        ^ (next() as u32 & 0xffff),
                );
                probes.push(near.to_string());
            }
        }
        ranges.extend(ranges.clone().into_iter().take(50));
        let parsed: Vec<Cidr> = ranges.iter().filter_map(|r| Cidr::parse(r)).collect();
        let set = CidrSet::new(parsed.iter().copied());
        let mut hits = 0;
        for p in &probes {
            let expected = parsed.iter().any(|r| r.contains(p));
            assert_eq!(set.contains(p), expected, "{p}");
            hits += usize::from(expected);
        }
        assert!(
            hits > probes.len() / 4 && hits < probes.len(),
            "{hits} of {}",
            probes.len()
        );
    }

    /// The same answers from literal lists (parsed once while planning) and from ranges in a
    /// column, over every string type; other types are refused while planning.
    #[tokio::test]
    async fn every_string_type_and_both_paths_agree() {
        let ctx = SessionContext::new();
        register(&ctx);
        let rows = "('10.0.0.7', '10.0.0.0/8'), ('192.168.1.9', '10.0.0.0/8'), \
                    ('2001:db8::1', '2001:db8::/32'), (NULL, '10.0.0.0/8'), ('<Redacted>', NULL)";
        let mut answers = Vec::new();
        for t in ["Utf8", "LargeUtf8", "Utf8View"] {
            for ranges in ["'10.0.0.0/8', '2001:db8::/32', 'nope'", "r"] {
                let sql = format!(
                    "SELECT ip_in_cidrs(arrow_cast(ip, '{t}'), {ranges}) AS hit, \
                            cidr_prefix(arrow_cast(r, '{t}')) AS len \
                     FROM (VALUES {rows}) AS v(ip, r)"
                );
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string();
                answers.push(text);
            }
        }
        assert!(answers[0].contains("| true  | 8   |"), "{}", answers[0]);
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:#?}");
        let err = ctx
            .sql("SELECT ip_in_cidrs(1, '10.0.0.0/8')")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ip_in_cidrs takes strings"), "{err}");
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
