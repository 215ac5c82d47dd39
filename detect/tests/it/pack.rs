//! Every rule in `rules/` loads, plans, and passes its fixtures.

use kvwatch_detect::engine::check_all;
use kvwatch_detect::fixture::run_fixtures;
use kvwatch_detect::pack::load_dir;
use std::path::PathBuf;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_pack_fixtures_pass() {
    let rules = load_dir(&rules_dir()).expect("rule pack loads");
    assert!(!rules.is_empty());
    plan_and_pass(&rules).await;
}

#[test]
fn embedded_pack_matches_the_directory() {
    let embedded = kvwatch_detect::pack::load_embedded().unwrap();
    let on_disk = load_dir(&rules_dir()).unwrap();
    let ids = |v: &[kvwatch_detect::Rule]| v.iter().map(|r| r.id().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&embedded), ids(&on_disk));
}

/// The Sigma examples (`rules/sigma/`) load beside nothing else, plan, and pass their fixtures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigma_examples_load_plan_and_pass() {
    let dir = rules_dir().join("sigma");
    let rules = load_dir(&dir).expect("Sigma rules load");
    let ids: Vec<&str> = rules.iter().map(|r| r.id()).collect();
    // The two base rules of the correlations are not rules of their own.
    assert_eq!(rules.len(), 5, "{ids:?}");
    assert!(ids.iter().all(|i| i.starts_with("sigma-")), "{ids:?}");
    plan_and_pass(&rules).await;
}

/// Every rule plans, has fixtures, positive and negative, and passes them all.
async fn plan_and_pass(rules: &[kvwatch_detect::Rule]) {
    check_all(rules).await.expect("every rule plans");
    let mut failures = Vec::new();
    for r in rules {
        let positive = r.doc.tests.iter().any(|t| t.expect.alerts > 0);
        let negative = r.doc.tests.iter().any(|t| t.expect.alerts == 0);
        assert!(
            positive && negative,
            "rule {} needs positive and negative fixtures",
            r.id()
        );
        for res in run_fixtures(r).await {
            if !res.passed {
                failures.push(format!(
                    "{} / {}: {}\n{}",
                    res.rule_id,
                    res.name,
                    res.message.unwrap_or_default(),
                    r.doc.sql
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fixture failures:\n{}",
        failures.join("\n\n")
    );
}
