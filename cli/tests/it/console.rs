//! The analyst console in a real browser: Chromium driven through its WebDriver against the
//! real `kvwatch serve` on a generated store. `scripts/test.sh` installs Debian's chromium
//! and chromium-driver; `KVWATCH_CHROMEDRIVER` / `KVWATCH_CHROMIUM` may point elsewhere.
//! Screenshots of every page go to `<target>/tmp/console-screenshots/`.

use super::api::{Reap, get, key, serve_with};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromedriver() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("KVWATCH_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
    );
    assert!(
        p.exists(),
        "ChromeDriver is not installed at {}: run scripts/test.sh (it installs chromium and chromium-driver) or set KVWATCH_CHROMEDRIVER",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A browser session and what it needs to report on itself.
struct Browser {
    c: Client,
    driver: String,
    shots: PathBuf,
    /// Console messages of level SEVERE (errors, CSP violations) seen so far, by page.
    errors: Vec<String>,
}

impl Browser {
    /// Reads the browser's console log since the last call; SEVERE entries are errors.
    async fn drain_log(&mut self, page: &str) {
        let sid = self.c.session_id().await.unwrap().unwrap();
        let url = format!("{}/session/{sid}/se/log", self.driver);
        let mut r = super::api::agent()
            .post(&url)
            .send_json(json!({"type": "browser"}))
            .unwrap();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        for e in v["value"].as_array().cloned().unwrap_or_default() {
            let level = e["level"].as_str().unwrap_or("");
            let msg = e["message"].as_str().unwrap_or("");
            if level == "SEVERE" || msg.contains("Content Security Policy") {
                self.errors.push(format!("{page}: {msg}"));
            }
        }
    }

    /// Checks the page has no console errors and saves a screenshot named `name`.
    async fn page(&mut self, name: &str) {
        // Let deferred script run and any late resource load.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        self.drain_log(name).await;
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    async fn el(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// The text of the first element matching `css`.
    async fn text(&self, css: &str) -> String {
        self.el(css).await.text().await.unwrap()
    }

    async fn path(&self) -> String {
        let u = self.c.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// Clicks what `css` finds and waits for the new document to load (a marker set on the
    /// old one is gone and the new one is complete).
    async fn click_nav(&self, css: &str) {
        self.c
            .execute("window.__kvw_old = true;", vec![])
            .await
            .unwrap();
        self.el(css).await.click().await.unwrap();
        let start = Instant::now();
        loop {
            let done = self
                .c
                .execute(
                    "return window.__kvw_old === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .map(|v| v == Value::Bool(true))
                .unwrap_or(false);
            if done {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no navigation after clicking {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sign_in(&self, base: &str, secret: &str) {
        self.c.goto(&format!("{base}/login")).await.unwrap();
        self.c
            .find(Locator::Css("#key"))
            .await
            .unwrap()
            .send_keys(secret)
            .await
            .unwrap();
        self.click_nav("form button[type=submit]").await;
    }

    async fn sign_out(&self) {
        self.click_nav("form.who button").await;
    }
}

#[test]
fn an_analyst_triages_in_the_console_and_a_reader_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let data = super::fixture::store(dir.path(), 1, 3);
    let analyst = key(&data, "analyst", "soc-analyst");
    let reader = key(&data, "reader", "soc-reader");
    let admin = key(&data, "admin", "soc-admin");
    // The behavioural models learn the store, so principal pages have baselines to show.
    let r = super::common::run(&data, &["detect", "--from", "2000-01-01"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (child, base) = serve_with(&data, &[], "serve.log");
    let _reap = Reap(child.id());

    // The session cookie: HttpOnly and SameSite=Strict always, Secure behind a TLS proxy.
    let no_redirects: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    for (proto, secure) in [(None, false), (Some("https"), true)] {
        let mut req = no_redirects.post(&format!("{base}/login"));
        if let Some(p) = proto {
            req = req.header("X-Forwarded-Proto", p);
        }
        let r = req
            .send_form([("key", analyst.as_str()), ("next", "/alerts")])
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let cookie = r
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert_eq!(cookie.contains("; Secure"), secure, "{cookie}");
    }

    let port = free_port();
    let mut driver = Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reap_driver = Reap(driver.id());
    let driver_url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let binary = std::env::var("KVWATCH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": binary, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
            ]}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let c = ClientBuilder::native()
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("a Chromium session");
        let mut b = Browser { c, driver: driver_url.clone(), shots, errors: Vec::new() };
        let api = |path: &str| format!("{base}/api/v1{path}");

        // Signed out, every page leads to the sign-in page, which remembers where to go back.
        b.c.goto(&format!("{base}/alerts")).await.unwrap();
        assert_eq!(b.path().await, "/login?next=%2Falerts");
        b.page("01-sign-in").await;

        // A wrong key is refused on the page.
        b.sign_in(&base, "kvw_0000").await;
        assert!(b.text(".error").await.contains("Unknown or revoked"));
        b.drain_log("sign-in refused").await;
        b.errors.retain(|e| !e.contains("401"));

        b.sign_in(&base, &analyst).await;
        assert_eq!(b.path().await, "/alerts");
        assert_eq!(b.text("h1").await, "Alerts");
        let rows = b.c.find_all(Locator::Css("table.queue tbody tr")).await.unwrap();
        assert!(rows.len() >= 4, "{} rows", rows.len());
        b.page("02-queue").await;

        // Filter by rule: the page lists exactly the API's alerts of that rule.
        let (_, all) = get(&api("/alerts?limit=1000"), Some(&analyst));
        let all = all["alerts"].as_array().unwrap().clone();
        // A rule whose newest alert names a person and has evidence.
        let rule = all
            .iter()
            .find(|a| a["principals"][0]["upn"].is_string() && a["evidence_count"].as_u64() > Some(0))
            .expect("an alert naming a person")["rule_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let want = all.iter().filter(|a| a["rule_id"] == rule.as_str()).count();
        let field = b.c.find(Locator::Css("form.filters input[name=rule]")).await.unwrap();
        field.send_keys(&rule).await.unwrap();
        b.click_nav("form.filters button[type=submit]").await;
        assert!(b.path().await.contains(&format!("rule={rule}")), "{}", b.path().await);
        let rows = b.c.find_all(Locator::Css("table.queue tbody tr")).await.unwrap();
        assert_eq!(rows.len(), want.min(50));
        b.page("03-queue-filtered").await;

        // Open an alert.
        let link = b.c.find(Locator::Css("table.queue tbody tr a.open")).await.unwrap();
        let href = link.attr("href").await.unwrap().unwrap();
        let id = href.trim_start_matches("/alerts/").to_owned();
        b.click_nav("table.queue tbody tr a.open").await;
        assert_eq!(b.path().await, href);
        let (_, alert) = get(&api(&format!("/alerts/{id}")), Some(&analyst));
        assert!(b.text("h1").await.contains(alert["title"].as_str().unwrap()));
        let evidence = b.c.find_all(Locator::Css("main table tbody tr")).await.unwrap();
        assert!(!evidence.is_empty());
        b.page("04-alert").await;

        // Follow an entity link to the vault's page.
        let vault = alert["vaults"][0].as_str().unwrap().to_owned();
        b.click_nav(&format!("dd a[href='/vaults/{vault}']")).await;
        assert_eq!(b.path().await, format!("/vaults/{vault}"));
        assert!(b.text("h1").await.contains(&vault));
        assert!(b.c.find(Locator::Css("figure svg")).await.is_ok(), "activity chart");
        b.page("05-vault").await;
        // A person's page: its blast radius and what the models learned about it.
        let person = all
            .iter()
            .find_map(|a| a["principals"][0]["upn"].as_str())
            .expect("an alert naming a person");
        {
            b.c.goto(&format!("{base}/principals/{person}")).await.unwrap();
            let main = b.text("main").await;
            assert!(main.contains("Blast radius"), "{main}");
            assert!(main.contains("Vaults, first seen first"), "the models' baseline: {main}");
            b.page("06-principal").await;
        }

        // Triage from the alert page; the API sees the change under the key's name.
        b.c.goto(&format!("{base}{href}")).await.unwrap();
        b.c.find(Locator::Css("#status")).await.unwrap().select_by_value("acknowledged").await.unwrap();
        let who = b.c.find(Locator::Css("#assignee")).await.unwrap();
        who.clear().await.unwrap();
        who.send_keys("alice").await.unwrap();
        b.c.find(Locator::Css("#comment")).await.unwrap().send_keys("checked with the vault owner").await.unwrap();
        b.click_nav("form.triage button[type=submit]").await;
        assert_eq!(b.path().await, href);
        let (_, after) = get(&api(&format!("/alerts/{id}")), Some(&analyst));
        assert_eq!(after["status"], "acknowledged");
        assert_eq!(after["assignee"], "alice");
        let trail = after["history"].as_array().unwrap();
        assert!(trail.iter().any(|h| h["action"] == "comment" && h["actor"] == "soc-analyst"), "{trail:?}");
        assert!(b.text("main").await.contains("checked with the vault owner"));
        b.page("07-alert-triaged").await;

        // Bulk: resolve the first two alerts of the queue at once.
        b.c.goto(&format!("{base}/alerts")).await.unwrap();
        let boxes = b.c.find_all(Locator::Css("table.queue tbody input[type=checkbox]")).await.unwrap();
        let mut picked = Vec::new();
        for bx in boxes.iter().take(2) {
            picked.push(bx.attr("value").await.unwrap().unwrap());
            bx.click().await.unwrap();
        }
        b.c.find(Locator::Css(".bulk select[name=action]")).await.unwrap().select_by_value("resolved").await.unwrap();
        b.click_nav(".bulk button[type=submit]").await;
        for id in &picked {
            let (_, a) = get(&api(&format!("/alerts/{id}")), Some(&analyst));
            assert_eq!(a["status"], "resolved", "{id}");
        }
        b.page("08-queue-bulk").await;

        // A change made elsewhere (here through the API) reaches the open queue without a
        // reload: the rows are replaced in place.
        let first = b.c.find(Locator::Css("table.queue tbody tr input[type=checkbox]")).await.unwrap();
        let fid = first.attr("value").await.unwrap().unwrap();
        let (code, _) = super::api::patch(&api(&format!("/alerts/{fid}")), &analyst, json!({"status": "suppressed"}));
        assert_eq!(code, 200);
        let fresh = b.c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css("#fresh:not([hidden])")).await.unwrap();
        assert!(fresh.text().await.unwrap().contains("Updated"));
        let row = b.text(&format!("table.queue tbody tr:has(input[value='{fid}'])")).await;
        assert!(row.contains("suppressed"), "{row}");

        // The workbench runs a query and draws it.
        b.c.goto(&format!("{base}/workbench")).await.unwrap();
        let sql = b.c.find(Locator::Css("#sql")).await.unwrap();
        sql.clear().await.unwrap();
        sql.send_keys("SELECT date_trunc('hour', time) AS hour, count(*) AS events FROM events GROUP BY 1 ORDER BY 1").await.unwrap();
        b.click_nav("#query button[value=table]").await;
        assert!(b.text("#result .ok").await.contains("rows"), "{}", b.text("main").await);
        let cells = b.c.find_all(Locator::Css("#result table tbody tr")).await.unwrap();
        assert!(cells.len() >= 2);
        assert!(b.c.find(Locator::Css("#result figure svg rect")).await.is_ok(), "a chart of hour and events");
        b.page("09-workbench").await;
        // The API's guards apply: a write is refused with the reason.
        let sql = b.c.find(Locator::Css("#sql")).await.unwrap();
        sql.clear().await.unwrap();
        sql.send_keys("COPY (SELECT 1) TO '/tmp/x.csv'").await.unwrap();
        b.click_nav("#query button[value=table]").await;
        assert!(b.text("#result .error").await.contains("refused"));
        b.drain_log("workbench refused").await;

        // Generate a report now and open it.
        b.c.goto(&format!("{base}/reports")).await.unwrap();
        b.c.find(Locator::Css("input[name=from]")).await.unwrap().clear().await.unwrap();
        b.c.execute("document.querySelector('input[name=from]').value = '2000-01-01';", vec![]).await.unwrap();
        b.click_nav("form.filters button[type=submit]").await;
        assert!(b.path().await.starts_with("/reports/"), "{}", b.path().await);
        assert!(b.c.find(Locator::Css("article.report h1")).await.is_ok());
        b.page("10-report").await;
        b.c.goto(&format!("{base}/reports")).await.unwrap();
        assert!(!b.c.find_all(Locator::Css("main table tbody tr")).await.unwrap().is_empty());

        for (name, path) in [("11-rules", "/rules"), ("12-health", "/health")] {
            b.c.goto(&format!("{base}{path}")).await.unwrap();
            assert_eq!(b.path().await, path);
            b.page(name).await;
        }

        // Sign out: the pages lead to the sign-in page again.
        b.sign_out().await;
        assert_eq!(b.path().await, "/login");
        b.c.goto(&format!("{base}{href}")).await.unwrap();
        assert!(b.path().await.starts_with("/login?next="));

        // A reader reads, but its triage is refused by the server even when the form is
        // forced open, and nothing changes.
        b.sign_in(&base, &reader).await;
        let nav = b.text("header.top nav").await;
        assert!(!nav.contains("Workbench"), "{nav}");
        let target = &picked[0];
        let (_, before) = get(&api(&format!("/alerts/{target}")), Some(&analyst));
        b.c.goto(&format!("{base}/alerts/{target}")).await.unwrap();
        assert!(b.text("form.triage").await.contains("not change them"));
        b.page("13-reader-alert").await;
        b.c.execute(
            "const f = document.querySelector('form.triage'); f.querySelector('fieldset').disabled = false; \
             document.querySelector('#status').value = 'new'; f.submit();",
            vec![],
        )
        .await
        .unwrap();
        b.c.wait().at_most(Duration::from_secs(10)).for_element(Locator::XPath("//h1[text()='Not allowed']")).await.unwrap();
        let (_, a) = get(&api(&format!("/alerts/{target}")), Some(&analyst));
        assert_eq!(a["status"], before["status"]);
        assert_eq!(a["history"], before["history"]);
        b.drain_log("reader refused").await;
        b.errors.retain(|e| !e.contains("403"));
        b.c.goto(&format!("{base}/workbench")).await.unwrap();
        assert_eq!(b.text("h1").await, "Not allowed");
        b.drain_log("reader workbench").await;
        b.errors.retain(|e| !e.contains("403"));

        // An admin creates a key (shown once) and revokes it; the key store agrees.
        b.sign_out().await;
        b.sign_in(&base, &admin).await;
        b.c.goto(&format!("{base}/admin")).await.unwrap();
        b.c.find(Locator::Css("form.filters input[name=name]")).await.unwrap().send_keys("temp-reader").await.unwrap();
        b.click_nav("form.filters button[type=submit]").await;
        let secret = b.text("#new-key").await;
        assert!(secret.starts_with("kvw_"), "{secret}");
        let (code, _) = get(&api("/alerts?limit=1"), Some(&secret));
        assert_eq!(code, 200, "the new key works");
        b.page("14-admin").await;
        b.click_nav("button[aria-label='Revoke temp-reader']").await;
        let (code, _) = get(&api("/alerts?limit=1"), Some(&secret));
        assert_eq!(code, 401, "the revoked key stops at once");

        assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
        b.c.close().await.unwrap();
    });
    let _ = driver.kill();
    let _ = driver.wait();
}
