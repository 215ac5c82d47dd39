//! `kvwatch query`: formats, the compatibility view, and read-only enforcement.

use crate::common::*;

#[test]
fn formats_and_compat_view() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), &[&samples().join("PT1H.json")]);
    let csv = run(
        dir.path(),
        &[
            "query",
            "--format",
            "csv",
            "SELECT operation, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        ],
    );
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines[0], "operation,n");
    assert!(lines.contains(&"SecretGet,3"), "{}", csv.stdout);
    let table = run(dir.path(), &["query", "SELECT count(*) AS n FROM events"]);
    assert!(
        table.stdout.contains("| n |") && table.stdout.contains("| 9 |"),
        "{}",
        table.stdout
    );
    let empty = query(dir.path(), "SELECT * FROM events WHERE vault = 'nope'");
    assert!(empty.is_empty());

    let rows = query(
        dir.path(),
        "SELECT \"OperationName\", \"CallerIPAddress\", \"requestUri_s\", \"httpStatusCode_d\", \"Resource\", \
         \"identity_claim_upn_s\", \"id_s\", \"ResultType\" FROM azure_diagnostics \
         WHERE \"OperationName\" = 'SecretGet' AND \"identity_claim_upn_s\" = 'alice@contoso.com'",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Resource"], "CONTOSOKEYVAULT");
    assert_eq!(rows[0]["httpStatusCode_d"], 200.0);
    assert_eq!(rows[0]["CallerIPAddress"], "203.0.113.10");
}

#[test]
fn query_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), &[&samples().join("single.json")]);
    let target = dir.path().join("stolen.csv");
    for sql in [
        format!("COPY (SELECT * FROM events) TO '{}'", target.display()),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".to_owned(),
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "INSERT INTO events SELECT * FROM events".to_owned(),
        "DROP TABLE events".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
    ] {
        let r = run(dir.path(), &["query", &sql]);
        assert_ne!(r.code, 0, "{sql} must be refused: {}", r.stdout);
        assert!(r.stderr.contains("error"), "{}", r.stderr);
    }
    assert!(!target.exists());
    assert_eq!(count(dir.path(), "SELECT count(*) FROM events"), 1);
}

#[test]
fn bad_sql_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), &[&samples().join("single.json")]);
    let r = run(dir.path(), &["query", "SELECT nope FROM events"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
}
