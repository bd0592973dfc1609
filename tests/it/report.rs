//! The report page in a real browser: Debian's chromium, headless, driven by chromedriver over
//! the W3C WebDriver protocol (a minimal client over reqwest, below), against a real daemon on a
//! lab mesh under `[auth]` with a `[plan]`. What is asserted is what the browser drew (the DOM
//! after layout): the e-value curve has one point per history point, the threshold line sits at
//! 1/alpha between the log axis' labelled decades, each ratio plot has its 1 + margin line, the
//! verdict is the API's, the waves board shows the plan's phase, and the login works. Screenshots
//! go to `target/test-artifacts/report-*.png`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{self, BAD, GOOD};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const READ_TOKEN: &str = "report-read-token-0123456789";
const ADMIN_TOKEN: &str = "report-admin-token-0123456789";
/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
struct Session {
    http: reqwest::Client,
    url: String,
}

async fn driver() -> Option<Driver> {
    if !(Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()) {
        if std::env::var("MESHGATE_EXTERNAL_TESTS").as_deref() == Ok("skip") {
            eprintln!(
                "skipped: {CHROMIUM} or {CHROMEDRIVER} missing (MESHGATE_EXTERNAL_TESTS=skip)"
            );
            return None;
        }
        panic!("{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver, or set MESHGATE_EXTERNAL_TESTS=skip");
    }
    let port = support::free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
    let c = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = c.get(format!("{}/status", d.base)).send().await {
            let v: Value = r.json().await.unwrap_or_default();
            if v["value"]["ready"] == true {
                return Some(d);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Driver {
    async fn session(&self) -> Session {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let profile = self._profile.path().display().to_string();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1360,3000", "--hide-scrollbars",
                    format!("--user-data-dir={profile}"),
                ],
            },
        }}});
        let v: Value = http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"));
        Session {
            url: format!("{}/session/{id}", self.base),
            http,
        }
    }
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        let r = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            r
        } else {
            r.json(&body)
        };
        let v: Value = r.send().await.unwrap().json().await.unwrap();
        assert!(
            v["value"]["error"].is_null(),
            "webdriver {method} {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            json!({}),
        )
        .await;
    }

    /// Wait until `script` returns true (a click's navigation may still be under way when the
    /// click returns, on a loaded machine).
    async fn until(&self, script: &str) {
        let start = Instant::now();
        while self.js(script).await != true {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "still not true after 20 s: {script}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// A PNG of the window, saved as `target/test-artifacts/report-{name}.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64_decode(v.as_str().unwrap());
        assert_eq!(&png[1..4], b"PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("report-{name}.png"));
        std::fs::write(&p, png).unwrap();
        eprintln!("screenshot: {}", p.display());
        p
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).bearer_auth(READ_TOKEN).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// Wait until `id` is final and its history has at least `points` points.
async fn settled(c: &reqwest::Client, base: &str, id: &str, points: usize) -> (Value, Value) {
    let start = Instant::now();
    loop {
        let (_, v) = get_json(c, &format!("{base}/v1/analyses/{id}/verdict")).await;
        let (_, h) = get_json(c, &format!("{base}/v1/analyses/{id}/history")).await;
        let n = h["points"].as_array().map_or(0, Vec::len);
        if v["decided"] == true && n >= points {
            return (v, h);
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{id}: {n} points, {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the browser drew on the analysis page, read from the DOM.
const DRAWN: &str = r#"
const svg = document.getElementById('e-values');
const y = el => parseFloat(el.getAttribute('y1'));
const ticks = [...svg.querySelectorAll('g[data-axis=y] text.tick')].map(t => ({
  label: t.textContent, value: parseFloat(t.textContent), y: y(t.previousElementSibling)}));
const series = {};
for (const p of svg.querySelectorAll('polyline[data-series]'))
  series[p.dataset.series] = p.points.numberOfItems;
const thr = svg.querySelector('line.threshold');
const ratios = [...document.querySelectorAll('svg[id^="ratio-"]')].map(r => {
  const m = r.querySelector('line.margin');
  return {id: r.id, scale: r.dataset.scale, margin: m && parseFloat(m.dataset.value), y: m && y(m),
    ticks: [...r.querySelectorAll('g[data-axis=y] text.tick')].map(t => ({value: parseFloat(t.textContent), y: y(t.previousElementSibling)})),
    lower: r.querySelector('polyline[data-series=lower]').points.numberOfItems};
});
const rect = svg.getBoundingClientRect();
return {scale: svg.dataset.scale, ticks, series, threshold: thr && {value: parseFloat(thr.dataset.value), y: y(thr)},
  ratios, verdict: document.querySelector('#verdict [data-verdict]').textContent,
  reason: document.getElementById('reason').textContent,
  selectors: [...document.querySelectorAll('#facts code')].map(c => c.textContent), width: rect.width, height: rect.height,
  bytes: document.documentElement.outerHTML.length};
"#;

/// y of `v` interpolated between the two labelled ticks around it (`log`: in log10).
fn between(ticks: &[Value], v: f64, log: bool) -> f64 {
    let f = |x: f64| if log { x.log10() } else { x };
    let t: Vec<(f64, f64)> = ticks
        .iter()
        .map(|t| (t["value"].as_f64().unwrap(), t["y"].as_f64().unwrap()))
        .collect();
    let w = t
        .windows(2)
        .find(|w| w[0].0 <= v && v <= w[1].0)
        .unwrap_or_else(|| panic!("{v} not between the ticks {t:?}"));
    let (a, b) = (w[0], w[1]);
    a.1 + (f(v) - f(a.0)) / (f(b.0) - f(a.0)) * (b.1 - a.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_draws_each_analysis_history_in_a_real_browser() {
    let Some(driver) = driver().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("read {READ_TOKEN}\nadmin {ADMIN_TOKEN}\n")).unwrap();
    let lab = support::lab(&format!(
        r#"
        [auth]
        tokens_file = "{}"
        [plan]
        name = "1.24 to 1.25"
        from_revision = "{}"
        to_revision = "{}"
        [[plan.waves]]
        name = "staging"
        namespaces = ["staging"]
        soak = "1m"
        checks = ["error-rate"]
        "#,
        tokens.display(),
        GOOD.0,
        GOOD.1
    ))
    .await;
    let base = lab.base.clone();
    let c = reqwest::Client::new();
    for (name, revs) in [("good-run", GOOD), ("bad-run", BAD)] {
        let mut body = support::analysis(name, revs);
        body["checks"] = json!(["error-rate", "latency-tail"]);
        let r = c
            .post(format!("{base}/v1/analyses"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let (good, history) = settled(&c, &base, "good-run", 8).await;
    let (bad, _) = settled(&c, &base, "bad-run", 2).await;
    assert_eq!(bad["verdict"], "NO-GO", "{bad}");
    let n = history["points"].as_array().unwrap().len();
    let (_, plan) = get_json(&c, &format!("{base}/v1/plan/status")).await;

    let s = driver.session().await;
    // The login: the form first, a wrong token refused, the read token in.
    s.goto(&format!("{base}/report/analyses/good-run")).await;
    s.find("form[action='/report/login']").await;
    s.screenshot("login").await;
    s.type_into("#token", "not-a-token-at-all-000").await;
    s.click("#login").await;
    s.until("return document.readyState === 'complete' && document.getElementById('login-error') !== null")
        .await;
    let err = s
        .js("return document.getElementById('login-error').textContent")
        .await;
    assert_eq!(err, "unknown token");
    s.type_into("#token", READ_TOKEN).await;
    s.click("#login").await;
    s.until(
        "return document.readyState === 'complete' && document.getElementById('e-values') !== null",
    )
    .await;
    let title = s.js("return document.title").await;
    assert_eq!(title, "good-run · meshgate", "back on the page asked for");

    let d = s.js(DRAWN).await;
    eprintln!("drawn: {d}");
    // Text with quotes and `>=` (reason, selectors) reads back as the API has it: escaped
    // right, not dropped or doubled.
    assert_eq!(d["verdict"], good["verdict"]);
    assert_eq!(d["reason"], good["reason"]);
    let (sel_b, sel_c) = support::selectors(GOOD);
    assert_eq!(d["selectors"], json!([sel_b, sel_c]), "{d}");
    assert_eq!(d["scale"], "log");
    // One point per history point, for the combined curve and each check's.
    assert_eq!(d["series"]["combined"], n, "{d}");
    for check in history["checks"].as_array().unwrap() {
        let key = format!("check:{}", check["name"].as_str().unwrap());
        assert_eq!(d["series"][&key], n, "{key}: {d}");
    }
    // A log axis: labelled decades, evenly spaced.
    let ticks = d["ticks"].as_array().unwrap();
    assert!(ticks.len() >= 3, "{d}");
    let (values, ys): (Vec<f64>, Vec<f64>) = ticks
        .iter()
        .map(|t| (t["value"].as_f64().unwrap(), t["y"].as_f64().unwrap()))
        .unzip();
    for w in values.windows(2) {
        let r = (w[1] / w[0]).log10();
        assert!(
            (r - r.round()).abs() < 1e-9 && r >= 1.0,
            "not decades: {values:?}"
        );
    }
    let gaps: Vec<f64> = ys.windows(2).map(|w| w[0] - w[1]).collect();
    assert!(
        gaps.iter().all(|g| (g - gaps[0]).abs() < 0.2 && *g > 0.0),
        "{ys:?}"
    );
    // The threshold line at 1/alpha (20), where the log axis puts it.
    let threshold = good["threshold"].as_f64().unwrap();
    assert_eq!(d["threshold"]["value"].as_f64().unwrap(), threshold);
    let want = between(ticks, threshold, true);
    let got = d["threshold"]["y"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 0.3,
        "threshold at y {got}, want {want}"
    );
    // Each ratio check: its bounds, one point per history point, and the 1 + margin line.
    let ratios = d["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), history["checks"].as_array().unwrap().len());
    for (r, check) in ratios.iter().zip(history["checks"].as_array().unwrap()) {
        let line = 1.0 + check["margin"].as_f64().unwrap();
        assert_eq!(r["margin"].as_f64().unwrap(), line, "{r}");
        assert_eq!(r["lower"], n, "{r}");
        let want = between(r["ticks"].as_array().unwrap(), line, false);
        assert!((r["y"].as_f64().unwrap() - want).abs() < 0.3, "{r}");
    }
    let shot = s.screenshot("analysis").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // The list and the waves board, as the plan's status says.
    s.goto(&format!("{base}/report")).await;
    s.until("return document.getElementById('waves') !== null")
        .await;
    let board = s
        .js("return [...document.querySelectorAll('#waves tr[data-wave]')].map(r => [r.dataset.wave, r.dataset.phase, r.querySelector('.rollback').textContent])")
        .await;
    let wave = &plan["waves"][0];
    assert_eq!(board[0][0], wave["name"], "{board} {plan}");
    assert_eq!(board[0][1], wave["phase"], "{board} {plan}");
    let rows = s
        .js("return [...document.querySelectorAll('#analyses tr[data-analysis]')].map(r => [r.dataset.analysis, r.querySelector('[data-verdict]').textContent])")
        .await;
    for (id, verdict) in [("good-run", &good["verdict"]), ("bad-run", &bad["verdict"])] {
        assert!(
            rows.as_array()
                .unwrap()
                .iter()
                .any(|r| r[0] == id && &r[1] == verdict),
            "{id} {verdict} not in {rows}"
        );
    }
    s.screenshot("index").await;
    s.quit().await;

    // The page is light: measured over HTTP with the cookie, as a browser fetches it.
    let page = c
        .get(format!("{base}/report/analyses/good-run"))
        .header("cookie", format!("meshgate_report={READ_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let bytes = page.bytes().await.unwrap().len();
    eprintln!("analysis page: {bytes} bytes for {n} points");
    assert!(bytes < 40_000 + 600 * n, "{bytes} bytes for {n} points");
    lab.shutdown().await;
}
