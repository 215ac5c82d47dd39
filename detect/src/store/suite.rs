//! The alert store's behaviour, run on both databases: every test here takes a maker of
//! fresh, empty store locations and runs once on SQLite and once on a private PostgreSQL
//! server ([`on_both`]).

use super::coverage::RuleState;
use super::testpg::PgServer;
use super::*;
use crate::alert::{AlertMeta, Occurrence, Principal};
use std::collections::BTreeSet;

const H: i64 = 3_600_000_000_000;

/// Runs `test` on SQLite, then on PostgreSQL; each call of the maker it gets is a new, empty
/// store.
fn on_both(test: impl Fn(&mut dyn FnMut() -> DataDir)) {
    let mut dirs = Vec::new();
    test(&mut || {
        let d = tempfile::tempdir().unwrap();
        let data = DataDir::new(d.path());
        dirs.push(d);
        data
    });
    let pg = PgServer::start();
    let mut n = 0;
    test(&mut || {
        n += 1;
        let d = tempfile::tempdir().unwrap();
        let data = DataDir::new(d.path()).with_alerts(Some(pg.create_db(&format!("s{n}"))));
        dirs.push(d);
        data
    });
}

fn occ(hour: i64) -> Occurrence {
    Occurrence {
        id: format!("occ-{hour:03}"),
        rule_id: "r".into(),
        dedup_key: "k".into(),
        window_start: hour * H,
        first_seen: hour * H,
        last_seen: hour * H + H / 2,
        event_count: 1,
        severity: Severity::Medium,
        summary: format!("hour {hour}"),
        principals: Vec::new(),
        vaults: vec!["v".into()],
        ips: Vec::new(),
        objects: Vec::new(),
        evidence: vec![format!("e{hour}")],
        fields: Default::default(),
    }
}

/// Rule metadata with a 2-hour suppression period.
fn meta() -> AlertMeta<'static> {
    static NONE: Vec<String> = Vec::new();
    AlertMeta {
        title: "t",
        description: "d",
        tactics: &NONE,
        techniques: &NONE,
        suppression_ns: 2 * H,
    }
}

/// (alert ID, occurrence IDs) of every alert, in ID order.
fn shape(data: &DataDir, order: &[i64]) -> Vec<(String, Vec<String>)> {
    let mut s = AlertStore::open(data).unwrap();
    let meta = meta();
    for h in order {
        s.apply(&meta, &[occ(*h)], 0).unwrap();
    }
    let rows =
        s.db.with(|db| {
            db.query(
                "SELECT alert_id, id FROM occurrences ORDER BY alert_id, id",
                &[],
            )
        })
        .unwrap();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in rows {
        let (a, o): (String, String) = (r.get(0).unwrap(), r.get(1).unwrap());
        match out.last_mut() {
            Some((last, v)) if *last == a => v.push(o),
            _ => out.push((a, vec![o])),
        }
    }
    let alerts: i64 =
        s.db.with(|db| db.one("SELECT count(*) FROM alerts", &[])?.unwrap().get(0))
            .unwrap();
    assert_eq!(alerts as usize, out.len(), "no alert without occurrences");
    out
}

#[test]
fn folding_does_not_depend_on_arrival_order() {
    on_both(|fresh| {
        // Two chains within the 2-hour suppression: hours 0, 1, 3 and 10, 11.
        let hours = [0, 1, 3, 10, 11];
        let want = shape(&fresh(), &hours);
        assert_eq!(
            want,
            vec![
                (
                    "occ-000".into(),
                    vec!["occ-000".into(), "occ-001".into(), "occ-003".into()]
                ),
                ("occ-010".into(), vec!["occ-010".into(), "occ-011".into()]),
            ]
        );
        for order in [[11, 10, 3, 1, 0], [3, 11, 0, 10, 1], [10, 1, 11, 3, 0]] {
            let got = shape(&fresh(), &order);
            assert_eq!(got, want, "arrival order {order:?}");
        }
        // An occurrence between two alerts that bridges them merges them into the first.
        let bridged = shape(&fresh(), &[0, 4, 2]);
        assert_eq!(bridged.len(), 1, "{bridged:?}");
        assert_eq!(bridged[0].0, "occ-000");
    });
}

#[test]
fn totals_kept_by_triggers_match_a_full_count() {
    on_both(|fresh| {
        let mut s = AlertStore::open(&fresh()).unwrap();
        let meta = meta();
        let same = |s: &AlertStore| {
            let mut full = s.counts(i64::MIN, i64::MAX).unwrap();
            full.by_rule.clear();
            assert_eq!(s.totals().unwrap(), full);
        };
        // Inserts, a fold, a bridging occurrence that merges two alerts (a delete), a higher
        // severity, analysts' status changes.
        s.apply(&meta, &[occ(0), occ(4), occ(10), occ(20), occ(30)], 0)
            .unwrap();
        same(&s);
        assert_eq!(s.totals().unwrap().total, 5);
        s.apply(&meta, &[occ(2)], 0).unwrap();
        let mut high = occ(30);
        high.severity = Severity::High;
        s.apply(&meta, &[high], 0).unwrap();
        same(&s);
        s.set_status("occ-020", Status::Suppressed, "ana", 1)
            .unwrap();
        s.set_status("occ-030", Status::Resolved, "ana", 2).unwrap();
        same(&s);
        assert_eq!(s.totals().unwrap().total, 4);
        assert_eq!(s.rule_totals().unwrap().get("r"), Some(&4));
    });
}

#[test]
fn withdrawing_shrinks_an_alert_resolves_an_empty_one_and_spares_analyst_decisions() {
    on_both(|fresh| {
        let mut s = AlertStore::open(&fresh()).unwrap();
        let meta = meta();
        // Alert occ-000 holds hours 0 and 1; alert occ-010 holds hour 10; occ-020 is suppressed.
        s.apply(&meta, &[occ(0), occ(1), occ(10), occ(20)], 0)
            .unwrap();
        s.set_status("occ-020", Status::Suppressed, "ana", 1)
            .unwrap();
        let status = |s: &AlertStore, id: &str| -> (String, i64) {
            let a = s.get(id).unwrap().unwrap();
            (a.status.as_str().to_owned(), a.occurrences)
        };
        // Windows [0 h, 24 h) re-evaluated: only hour 0 is still found.
        let keep: BTreeSet<&str> = ["occ-000"].into_iter().collect();
        let n = s.withdraw(&meta, "r", (0, 24 * H), &keep, 5).unwrap();
        assert_eq!(n, 3);
        assert_eq!(status(&s, "occ-000"), ("new".into(), 1));
        assert_eq!(status(&s, "occ-010"), ("resolved".into(), 0));
        assert_eq!(status(&s, "occ-020"), ("suppressed".into(), 0));
        assert_eq!(s.occurrences("occ-000").unwrap().len(), 1);
        let h = s.history("occ-010").unwrap();
        assert!(h.iter().any(|e| e.action == "withdrawn"), "{h:?}");
        assert!(
            h.iter()
                .any(|e| e.actor == "detection" && e.new.as_deref() == Some("resolved")),
            "{h:?}"
        );
        // Windows outside the range are not touched, and a second pass finds nothing more.
        assert_eq!(s.withdraw(&meta, "r", (0, 24 * H), &keep, 6).unwrap(), 0);
    });
}

/// Six alerts with distinct entities, times, severities and texts, far enough apart not to
/// fold.
fn six(s: &mut AlertStore) {
    let meta = meta();
    for i in 0..6_i64 {
        let mut o = occ(i * 10);
        o.dedup_key = format!("key-{i}");
        o.vaults = vec![format!("Vault-{}", i % 2)];
        o.ips = vec![format!("10.0.0.{}", i % 3)];
        o.principals = vec![Principal {
            upn: Some(format!("User{i}@Contoso.com")),
            oid: Some(format!("oid-{i}")),
            ..Default::default()
        }];
        o.severity = [Severity::Low, Severity::Medium, Severity::High][i as usize % 3];
        o.event_count = 10 - i;
        o.summary = format!("read 100% of secrets_{i} in vault {}", i % 2);
        s.apply(&meta, &[o], 1000 + i).unwrap();
    }
}

fn ids(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.as_str()).collect()
}

#[test]
fn listing_filters_sorts_and_pages() {
    on_both(|fresh| {
        let mut s = AlertStore::open(&fresh()).unwrap();
        six(&mut s);
        let list = |f: AlertFilter| s.list(&f).unwrap();
        let all = list(AlertFilter::default());
        assert_eq!(
            ids(&all),
            [
                "occ-050", "occ-040", "occ-030", "occ-020", "occ-010", "occ-000"
            ]
        );
        // Entities, case-insensitive where names are.
        let vault = list(AlertFilter {
            vault: Some("VAULT-1".into()),
            ..Default::default()
        });
        assert_eq!(ids(&vault), ["occ-050", "occ-030", "occ-010"]);
        let ip = list(AlertFilter {
            ip: Some("10.0.0.0".into()),
            ..Default::default()
        });
        assert_eq!(ids(&ip), ["occ-030", "occ-000"]);
        for who in ["user4@contoso.COM", "OID-4"] {
            let p = list(AlertFilter {
                principal: Some(who.into()),
                ..Default::default()
            });
            assert_eq!(ids(&p), ["occ-040"], "{who}");
        }
        let two_terms = list(AlertFilter {
            vault: Some("vault-0".into()),
            ip: Some("10.0.0.1".into()),
            ..Default::default()
        });
        assert_eq!(ids(&two_terms), ["occ-040"]);
        // Text: a case-insensitive substring; `%` and `_` are literal.
        let text = list(AlertFilter {
            text: Some("SECRETS_3".into()),
            ..Default::default()
        });
        assert_eq!(ids(&text), ["occ-030"]);
        let pct = list(AlertFilter {
            text: Some("100% of".into()),
            ..Default::default()
        });
        assert_eq!(pct.len(), 6);
        let none = list(AlertFilter {
            text: Some("secrets%3".into()),
            ..Default::default()
        });
        assert!(none.is_empty(), "{:?}", ids(&none));
        // Time, severity, rule, status, assignee.
        let window = list(AlertFilter {
            since: Some(10 * H),
            until: Some(30 * H + H / 2),
            ..Default::default()
        });
        assert_eq!(ids(&window), ["occ-020", "occ-010"]);
        let high = list(AlertFilter {
            min_severity: Some(Severity::High),
            ..Default::default()
        });
        assert_eq!(ids(&high), ["occ-050", "occ-020"]);
        s.update(
            "occ-010",
            &AlertUpdate {
                status: Some(Status::Acknowledged),
                assignee: Some(Some("ana".into())),
                comment: None,
            },
            "ana",
            2000,
        )
        .unwrap();
        let acked = list(AlertFilter {
            status: Some(Status::Acknowledged),
            rule: Some("r".into()),
            ..Default::default()
        });
        assert_eq!(ids(&acked), ["occ-010"]);
        let mine = list(AlertFilter {
            assignee: Some("ana".into()),
            ..Default::default()
        });
        assert_eq!(ids(&mine), ["occ-010"]);
        assert!(
            list(AlertFilter {
                rule: Some("other".into()),
                ..Default::default()
            })
            .is_empty()
        );
        // Every order, paged two at a time by keyset, gives the same as one listing.
        for (name, sort) in AlertSort::ALL {
            let whole = list(AlertFilter {
                sort,
                ..Default::default()
            });
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let page = list(AlertFilter {
                    sort,
                    limit: Some(2),
                    after: after.clone(),
                    ..Default::default()
                });
                let Some(last) = page.last() else { break };
                after = Some((sort.key(last), last.id.clone()));
                paged.extend(page);
            }
            assert_eq!(ids(&paged), ids(&whole), "{name}");
        }
        let by_events = list(AlertFilter {
            sort: AlertSort::EventsAsc,
            ..Default::default()
        });
        assert_eq!(by_events[0].id, "occ-050");
        // The alert's entities come back as stored.
        let a = s.get("occ-040").unwrap().unwrap();
        assert_eq!(a.vaults, vec!["Vault-0".to_owned()]);
        assert_eq!(a.principals[0].upn.as_deref(), Some("User4@Contoso.com"));
        assert!(s.get("nope").unwrap().is_none());
    });
}

#[test]
fn the_change_feed_carries_every_change_once_in_order() {
    on_both(|fresh| {
        let mut s = AlertStore::open(&fresh()).unwrap();
        assert_eq!(s.head_seq().unwrap(), 0);
        six(&mut s);
        let feed = s.changes(0, 100).unwrap();
        assert_eq!(feed.len(), 6);
        assert!(feed.windows(2).all(|w| w[0].0 < w[1].0));
        let head = s.head_seq().unwrap();
        assert_eq!(feed.last().unwrap().0, head);
        // A change moves the alert to the head of the feed; an update that changes nothing
        // does not.
        s.set_status("occ-000", Status::Acknowledged, "ana", 3000)
            .unwrap();
        s.set_status("occ-000", Status::Acknowledged, "ana", 3001)
            .unwrap();
        let after = s.changes(head, 100).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].1.id, "occ-000");
        assert_eq!(after[0].1.status, Status::Acknowledged);
        assert!(after[0].0 > head);
        assert_eq!(s.changes(0, 100).unwrap().len(), 6, "each alert once");
        assert_eq!(s.changes(0, 2).unwrap().len(), 2);
        // Triage history, in order, with the actor.
        s.update(
            "occ-000",
            &AlertUpdate {
                status: None,
                assignee: Some(Some("bo".into())),
                comment: Some("looking".into()),
            },
            "bo",
            3002,
        )
        .unwrap();
        let h = s.history("occ-000").unwrap();
        let actions: Vec<(&str, Option<&str>)> = h
            .iter()
            .map(|e| (e.action.as_str(), e.new.as_deref()))
            .collect();
        assert_eq!(
            actions,
            [
                ("status", Some("acknowledged")),
                ("assignee", Some("bo")),
                ("comment", Some("looking"))
            ]
        );
        assert_eq!(s.all_history().unwrap().len(), 3);
        assert!(matches!(
            s.set_status("nope", Status::Resolved, "ana", 1),
            Err(AlertStoreError::NoSuchAlert(_))
        ));
    });
}

#[test]
fn sink_cursors_and_dead_letters() {
    on_both(|fresh| {
        let mut s = AlertStore::open(&fresh()).unwrap();
        six(&mut s);
        assert_eq!(s.sink_cursor("siem").unwrap(), 0);
        s.set_sink_cursor("siem", 4, 1).unwrap();
        s.set_sink_cursor("siem", 2, 2).unwrap();
        assert_eq!(
            s.sink_cursor("siem").unwrap(),
            4,
            "a cursor never moves back"
        );
        s.add_dead_letters(
            "siem",
            &[(1, "occ-000"), (2, "occ-010")],
            Some(400),
            "bad",
            5,
        )
        .unwrap();
        s.add_dead_letters("hook", &[(3, "occ-020")], None, "refused", 6)
            .unwrap();
        // A later refusal of the same alert replaces the entry.
        s.add_dead_letters("siem", &[(2, "occ-010")], Some(422), "worse", 7)
            .unwrap();
        let all = s.dead_letters(None, 10).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].alert_id, "occ-010");
        assert_eq!(all[0].http_status, Some(422));
        assert_eq!(all[0].error, "worse");
        assert!(!all[0].retry);
        assert_eq!(s.dead_letters(Some("hook"), 10).unwrap().len(), 1);
        assert_eq!(
            s.dead_letter_counts().unwrap(),
            [("hook".to_owned(), 1), ("siem".to_owned(), 2)]
        );
        assert!(s.retry_queue("siem", 10).unwrap().is_empty());
        assert_eq!(s.retry_dead_letters("siem").unwrap(), 2);
        assert_eq!(s.retry_dead_letters("siem").unwrap(), 0);
        let queue = s.retry_queue("siem", 10).unwrap();
        assert_eq!(
            queue.iter().map(|(_, a)| a.id.as_str()).collect::<Vec<_>>(),
            ["occ-000", "occ-010"]
        );
        s.remove_dead_letters("siem", &["occ-000", "occ-010"])
            .unwrap();
        assert_eq!(s.dead_letters(None, 10).unwrap().len(), 1);
    });
}

#[test]
fn detection_bookkeeping_round_trips() {
    on_both(|fresh| {
        let mut s = AlertStore::open(&fresh()).unwrap();
        assert!(s.covered_files().unwrap().is_empty());
        s.replace_covered(&[("a.parquet".into(), 1, 2), ("b.parquet".into(), 3, 4)])
            .unwrap();
        s.replace_covered(&[("b.parquet".into(), 3, 5), ("c.parquet".into(), 6, 7)])
            .unwrap();
        assert_eq!(
            s.covered_files().unwrap().into_iter().collect::<Vec<_>>(),
            ["b.parquet", "c.parquet"]
        );
        s.record_run("r", 100, (0, 10), 3, 12).unwrap();
        s.record_run("r", 200, (10, 20), 4, 13).unwrap();
        assert_eq!(s.rule_runs().unwrap().get("r"), Some(&(200, 4, 13)));
        assert_eq!(s.rule_state("r").unwrap().last_run_at, Some(200));
        let st = RuleState {
            pending: vec![(1, 2), (5, 9)],
            judged_to: Some(42),
            last_run_at: None,
        };
        s.set_rule_state("q", &st).unwrap();
        assert_eq!(s.rule_state("q").unwrap(), st);
        assert_eq!(s.rule_state("never").unwrap(), RuleState::default());
        let mut slots = std::collections::BTreeMap::new();
        slots.insert("daily".to_owned(), 5_i64);
        s.set_report_slots(&slots).unwrap();
        slots.insert("daily".to_owned(), 9);
        slots.insert("weekly".to_owned(), 7);
        s.set_report_slots(&slots).unwrap();
        assert_eq!(s.report_slots().unwrap(), slots);
    });
}

#[test]
fn postgres_refuses_a_newer_schema_and_migrates_once_under_racing_nodes() {
    let pg = PgServer::start();
    let url = pg.create_db("race");
    let data = DataDir::new(tempfile::tempdir().unwrap().path()).with_alerts(Some(url));
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let data = data.clone();
            std::thread::spawn(move || AlertStore::open(&data).map(|_| ()))
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    assert_eq!(pg.psql("race", "SELECT version FROM kvwatch_schema"), "1");
    assert_eq!(pg.psql("race", "SELECT count(*) FROM kvwatch_schema"), "1");
    pg.psql("race", "UPDATE kvwatch_schema SET version = 99");
    match AlertStore::open(&data) {
        Err(AlertStoreError::TooNew { found: 99, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

/// A reader that follows the feed by "change number greater than the last one I saw" never
/// skips a change: a writer whose transaction is still open holds the next number back from
/// every other writer until it commits, so numbers become visible in order.
#[test]
fn postgres_change_numbers_follow_commit_order_across_writers() {
    let pg = PgServer::start();
    let url = pg.create_db("feed");
    let data = DataDir::new(tempfile::tempdir().unwrap().path()).with_alerts(Some(url.clone()));
    let mut s = AlertStore::open(&data).unwrap();
    six(&mut s);
    let head = s.head_seq().unwrap();
    // Writer A changes occ-000 and keeps its transaction open.
    let mut a = super::pg::connect(&url).unwrap();
    let mut tx = a.transaction().unwrap();
    tx.execute(
        "UPDATE alerts SET status = 'acknowledged' WHERE id = 'occ-000'",
        &[],
    )
    .unwrap();
    // Writer B changes occ-010 meanwhile, on its own connection.
    let b = {
        let data = data.clone();
        std::thread::spawn(move || {
            AlertStore::open(&data)
                .unwrap()
                .set_status("occ-010", Status::Resolved, "bo", 1)
                .unwrap()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A reader follows the feed while A is open.
    let mut cursor = head;
    let mut seen = Vec::new();
    for (seq, alert) in s.changes(cursor, 100).unwrap() {
        cursor = seq;
        seen.push(alert.id);
    }
    tx.commit().unwrap();
    b.join().unwrap();
    for (_, alert) in s.changes(cursor, 100).unwrap() {
        seen.push(alert.id);
    }
    seen.sort();
    assert_eq!(seen, ["occ-000", "occ-010"], "the reader skipped a change");
}

/// `kvwatch alerts migrate`: everything a SQLite store holds arrives in PostgreSQL as it was,
/// change numbers included, and both go on from there alike.
#[test]
fn a_sqlite_store_copied_into_postgres_carries_on_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let lite_data = DataDir::new(dir.path());
    let mut lite = AlertStore::open(&lite_data).unwrap();
    six(&mut lite);
    lite.set_status("occ-010", Status::Resolved, "ana", 5000)
        .unwrap();
    lite.set_sink_cursor("siem", 7, 1).unwrap();
    lite.add_dead_letters("siem", &[(3, "occ-020")], Some(400), "bad", 6)
        .unwrap();
    lite.replace_covered(&[("f.parquet".into(), 1, 2)]).unwrap();
    lite.record_run("r", 9, (0, 1), 6, 3).unwrap();
    let pg = PgServer::start();
    let pg_data = DataDir::new(dir.path()).with_alerts(Some(pg.create_db("copy")));
    let dest = AlertStore::open(&pg_data).unwrap();
    let mut seen = 0;
    let report = lite.copy_into(&dest, |_, n| seen = n).unwrap();
    assert!(seen > 0);
    assert_eq!(report.tables[0], ("alerts".to_owned(), 6));
    let pgs = &dest;
    assert_eq!(pgs.changes(0, 100).unwrap(), lite.changes(0, 100).unwrap());
    assert_eq!(pgs.head_seq().unwrap(), lite.head_seq().unwrap());
    assert_eq!(pgs.all_history().unwrap(), lite.all_history().unwrap());
    assert_eq!(
        pgs.dead_letters(None, 9).unwrap(),
        lite.dead_letters(None, 9).unwrap()
    );
    assert_eq!(pgs.sink_cursor("siem").unwrap(), 7);
    assert_eq!(pgs.totals().unwrap(), lite.totals().unwrap());
    assert_eq!(pgs.covered_files().unwrap(), lite.covered_files().unwrap());
    assert_eq!(pgs.rule_runs().unwrap(), lite.rule_runs().unwrap());
    let by_vault = AlertFilter {
        vault: Some("vault-1".into()),
        ..Default::default()
    };
    assert_eq!(pgs.list(&by_vault).unwrap(), lite.list(&by_vault).unwrap());
    // Both go on alike: the next change takes the next number, history continues.
    for s in [&lite, pgs] {
        s.set_status("occ-000", Status::Acknowledged, "bo", 6000)
            .unwrap();
    }
    assert_eq!(pgs.changes(0, 100).unwrap(), lite.changes(0, 100).unwrap());
    assert_eq!(pgs.all_history().unwrap(), lite.all_history().unwrap());
    // A second copy would mix two stores: refused, and nothing changes.
    let err = lite.copy_into(&dest, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("empty database"), "{err}");
    assert_eq!(pgs.changes(0, 100).unwrap().len(), 6);
}

/// The leadership lease: one holder at a time, taken over only after expiry with the next
/// epoch, and a store opened under an ended lease writes nothing.
#[test]
fn postgres_lease_has_one_holder_and_fences_an_ended_term() {
    use super::lease::Lease;
    let pg = PgServer::start();
    let url = pg.create_db("lease");
    let ttl = std::time::Duration::from_millis(800);
    let a = Lease::new(&url, "a", ttl).unwrap();
    let b = Lease::new(&url, "b", ttl).unwrap();
    let ca = a.try_acquire().unwrap().expect("a free lease is taken");
    assert_eq!(ca.epoch, 1);
    assert!(b.try_acquire().unwrap().is_none(), "held, unexpired");
    assert!(a.renew(&ca).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let base = DataDir::new(dir.path()).with_alerts(Some(url.clone()));
    let mut under_a = AlertStore::open(&base.clone().with_lease("a", ca.epoch)).unwrap();
    under_a.apply(&meta(), &[occ(0)], 1).unwrap();
    under_a.check_lease().unwrap();
    // a stops renewing (paused); b takes over after expiry, with the next epoch.
    std::thread::sleep(ttl + std::time::Duration::from_millis(300));
    let cb = b
        .try_acquire()
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(cb.epoch, 2);
    assert!(!a.renew(&ca).unwrap(), "a's term is over");
    // a, resumed, writes nothing: every write transaction is refused.
    let before = AlertStore::open(&base).unwrap().changes(0, 100).unwrap();
    for r in [
        under_a.apply(&meta(), &[occ(10)], 2).map(|_| ()),
        under_a.set_sink_cursor("siem", 9, 2),
        under_a.record_run("r", 2, (0, 1), 1, 1),
        under_a.check_lease(),
    ] {
        assert!(
            matches!(r, Err(AlertStoreError::Fenced { epoch: 1, .. })),
            "{r:?}"
        );
    }
    let plain = AlertStore::open(&base).unwrap();
    assert_eq!(plain.changes(0, 100).unwrap(), before);
    assert_eq!(plain.sink_cursor("siem").unwrap(), 0);
    // Analysts' writes are no leader work and need no lease.
    plain
        .set_status("occ-000", Status::Acknowledged, "ana", 3)
        .unwrap();
    // b's store writes; b gives the lease up and a can take it at once.
    let mut under_b = AlertStore::open(&base.clone().with_lease("b", cb.epoch)).unwrap();
    under_b.apply(&meta(), &[occ(10)], 4).unwrap();
    b.release(&cb).unwrap();
    let ca2 = a.try_acquire().unwrap().expect("a released lease is free");
    assert_eq!(ca2.epoch, 3);
    assert_eq!(a.current().unwrap(), Some((ca2, true)));
}

/// TLS to the database: verified against the CA given with `sslrootcert` (certificate and
/// host name), refused without it, and `require` never falls back to plain text.
#[test]
fn postgres_over_tls_verifies_the_server() {
    let pg = PgServer::start_tls();
    pg.create_db("tls");
    let ca = pg.ca();
    let base = format!("postgres://kvwatch@127.0.0.1:{}/tls", pg.port);
    let open = |query: &str| {
        let data = DataDir::new(tempfile::tempdir().unwrap().path())
            .with_alerts(Some(format!("{base}?{query}")));
        AlertStore::open(&data)
    };
    let s = open(&format!("sslmode=verify-full&sslrootcert={}", ca.display())).unwrap();
    assert!(s.list(&AlertFilter::default()).unwrap().is_empty());
    assert_eq!(
        pg.psql(
            "tls",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.application_name = 'kvwatch'"
        ),
        "1",
        "the store's session is encrypted"
    );
    match open("sslmode=require") {
        Err(e) => assert!(e.to_string().contains("TLS handshake"), "{e}"),
        Ok(_) => panic!("an unknown CA was accepted"),
    }
    assert!(open("sslmode=sideways").is_err());
}
