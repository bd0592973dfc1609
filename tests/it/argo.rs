//! Argo Rollouts' side of the `web` provider, played faithfully against a real daemon: the test
//! reads deploy/argo/analysistemplate.yaml, substitutes `{{args.x}}`, sends what webmetric.go
//! sends, evaluates the client-go JSONPath (first match), then the template's expr-lang conditions
//! as evaluate.go does (failure first; both set and neither true is Inconclusive), and assesses
//! the metric as analysis.go does (failureLimit, inconclusiveLimit, consecutiveErrorLimit,
//! count; Errors do not count and are retried after DefaultErrorRetryInterval when no interval).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{lab, selectors, BAD, GOOD};
use serde_json::{json, Value};

// ---- client-go JSONPath, the subset templates use: {$}, {$.a.b}, {.a.b}, {$.a[0]} ----

fn jsonpath_first(template: &str, doc: &Value) -> Result<Value, String> {
    let inner = template
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| format!("unrecognized jsonpath {template:?}"))?;
    let path = inner.strip_prefix('$').unwrap_or(inner);
    let mut cur = doc.clone();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur
                .get(key)
                .cloned()
                .ok_or_else(|| format!("{key} is not found"))?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or("unterminated [")?;
            let i: usize = r[..end].parse().map_err(|_| "bad index")?;
            cur = cur
                .get(i)
                .cloned()
                .ok_or_else(|| format!("array index out of bounds: index {i}"))?;
            rest = &r[end + 1..];
        } else {
            return Err(format!("unrecognized jsonpath {template:?}"));
        }
    }
    Ok(cur)
}

// ---- expr-lang, the subset the template uses: ==, !=, ||, &&, !, (), "strings", numbers, result ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let q = c;
            let mut j = i + 1;
            let mut v = String::new();
            while j < b.len() && b[j] != q {
                v.push(b[j]);
                j += 1;
            }
            if j == b.len() {
                return Err("unterminated string".into());
            }
            out.push(Tok::Str(v));
            i = j + 1;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == '.') {
                j += 1;
            }
            out.push(Tok::Num(
                b[i..j].iter().collect::<String>().parse().unwrap(),
            ));
            i = j;
        } else if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            out.push(Tok::Ident(b[i..j].iter().collect()));
            i = j;
        } else {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            let op = match two.as_str() {
                "==" => "==",
                "!=" => "!=",
                "||" => "||",
                "&&" => "&&",
                _ => match c {
                    '!' => "!",
                    '(' => "(",
                    ')' => ")",
                    _ => return Err(format!("unexpected {c:?}")),
                },
            };
            i += op.len();
            out.push(Tok::Op(op));
        }
    }
    Ok(out)
}

struct Eval<'a> {
    t: Vec<Tok>,
    i: usize,
    result: &'a Value,
}

impl Eval<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn or(&mut self) -> Result<Value, String> {
        let mut l = self.and()?;
        while self.peek() == Some(&Tok::Op("||")) || self.peek() == Some(&Tok::Ident("or".into())) {
            self.i += 1;
            let r = self.and()?;
            l = Value::Bool(truthy(&l)? || truthy(&r)?);
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Value, String> {
        let mut l = self.cmp()?;
        while self.peek() == Some(&Tok::Op("&&")) || self.peek() == Some(&Tok::Ident("and".into()))
        {
            self.i += 1;
            let r = self.cmp()?;
            l = Value::Bool(truthy(&l)? && truthy(&r)?);
        }
        Ok(l)
    }
    fn cmp(&mut self) -> Result<Value, String> {
        let l = self.unary()?;
        match self.peek() {
            Some(Tok::Op("==")) => {
                self.i += 1;
                let r = self.unary()?;
                Ok(Value::Bool(equal(&l, &r)))
            }
            Some(Tok::Op("!=")) => {
                self.i += 1;
                let r = self.unary()?;
                Ok(Value::Bool(!equal(&l, &r)))
            }
            _ => Ok(l),
        }
    }
    fn unary(&mut self) -> Result<Value, String> {
        if self.peek() == Some(&Tok::Op("!")) || self.peek() == Some(&Tok::Ident("not".into())) {
            self.i += 1;
            let v = self.unary()?;
            return Ok(Value::Bool(!truthy(&v)?));
        }
        self.atom()
    }
    fn atom(&mut self) -> Result<Value, String> {
        let t = self.t.get(self.i).cloned().ok_or("unexpected end")?;
        self.i += 1;
        match t {
            Tok::Str(s) => Ok(Value::String(s)),
            Tok::Num(n) => Ok(json!(n)),
            Tok::Ident(id) if id == "result" => Ok(self.result.clone()),
            Tok::Ident(id) if id == "true" => Ok(Value::Bool(true)),
            Tok::Ident(id) if id == "false" => Ok(Value::Bool(false)),
            Tok::Ident(id) if id == "nil" => Ok(Value::Null),
            Tok::Op("(") => {
                let v = self.or()?;
                if self.peek() != Some(&Tok::Op(")")) {
                    return Err("missing )".into());
                }
                self.i += 1;
                Ok(v)
            }
            other => Err(format!("unknown name or token {other:?}")),
        }
    }
}

fn truthy(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected bool, but got {v}"))
}

/// expr-lang's `==`: numbers compare as numbers, other types must match, no error on a mismatch.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// evaluate.go's EvalCondition: the expression must give a bool.
fn eval_condition(expr: &str, result: &Value) -> Result<bool, String> {
    let mut e = Eval {
        t: lex(expr)?,
        i: 0,
        result,
    };
    let v = e.or()?;
    if e.i != e.t.len() {
        return Err(format!("unexpected token {:?}", e.t[e.i]));
    }
    truthy(&v)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Successful,
    Failed,
    Inconclusive,
    Error,
    Running,
}

/// evaluate.go's EvaluateResult.
fn evaluate_result(result: &Value, success: &str, failure: &str) -> Phase {
    let mut ok = false;
    let mut fail = false;
    if !success.is_empty() {
        match eval_condition(success, result) {
            Ok(b) => ok = b,
            Err(_) => return Phase::Error,
        }
    }
    if !failure.is_empty() {
        match eval_condition(failure, result) {
            Ok(b) => fail = b,
            Err(_) => return Phase::Error,
        }
    }
    match (success.is_empty(), failure.is_empty()) {
        (true, true) => return Phase::Successful,
        (false, true) => fail = !ok,
        (true, false) => ok = !fail,
        _ => {}
    }
    if fail {
        Phase::Failed
    } else if !ok {
        Phase::Inconclusive
    } else {
        Phase::Successful
    }
}

// ---- the metric, read from the template ----

struct Metric {
    success: String,
    failure: String,
    failure_limit: i64,
    inconclusive_limit: i64,
    consecutive_error_limit: i64,
    count: Option<i64>,
    interval: Option<Duration>,
    method: String,
    url: String,
    json_body: Option<Value>,
    json_path: String,
    timeout: Duration,
}

fn substitute(s: &str, args: &BTreeMap<&str, String>) -> String {
    let mut out = s.to_owned();
    for (k, v) in args {
        out = out.replace(&format!("{{{{args.{k}}}}}"), v);
    }
    assert!(!out.contains("{{args."), "unresolved argument in {out}");
    out
}

fn subst_value(v: &Value, args: &BTreeMap<&str, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(s, args)),
        Value::Array(a) => Value::Array(a.iter().map(|x| subst_value(x, args)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), subst_value(x, args)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn template() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/argo/analysistemplate.yaml"
    ))
    .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn metric(args: &BTreeMap<&str, String>) -> Metric {
    let t = template();
    // Argument defaults from the template, overridden by the caller's.
    let mut all: BTreeMap<&str, String> = BTreeMap::new();
    let names: Vec<(String, Option<String>)> = t["spec"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["value"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let leaked: &'static [(String, Option<String>)] = Box::leak(names.into_boxed_slice());
    for (n, v) in leaked {
        if let Some(v) = v {
            all.insert(n.as_str(), v.clone());
        }
    }
    all.extend(args.iter().map(|(k, v)| (*k, v.clone())));
    let m = &t["spec"]["metrics"][0];
    let web = &m["provider"]["web"];
    let int = |v: &Value, d: i64| v.as_i64().unwrap_or(d);
    Metric {
        success: m["successCondition"].as_str().unwrap_or("").to_owned(),
        failure: m["failureCondition"].as_str().unwrap_or("").to_owned(),
        failure_limit: int(&m["failureLimit"], 0),
        inconclusive_limit: int(&m["inconclusiveLimit"], 0),
        consecutive_error_limit: int(&m["consecutiveErrorLimit"], 4),
        count: m["count"].as_i64(),
        interval: m["interval"]
            .as_str()
            .map(|s| humantime::parse_duration(s).unwrap()),
        method: web["method"].as_str().unwrap_or("GET").to_owned(),
        url: substitute(web["url"].as_str().unwrap(), &all),
        json_body: (!web["jsonBody"].is_null()).then(|| subst_value(&web["jsonBody"], &all)),
        json_path: web["jsonPath"].as_str().unwrap_or("{$}").to_owned(),
        timeout: Duration::from_secs(int(&web["timeoutSeconds"], 10) as u64),
    }
}

/// webmetric.go: one measurement.
async fn measure(m: &Metric, client: &reqwest::Client) -> (Phase, String) {
    let mut req = match m.method.as_str() {
        "POST" => client.post(&m.url),
        "PUT" => client.put(&m.url),
        _ => client.get(&m.url),
    };
    if let Some(b) = &m.json_body {
        req = req.json(b);
    }
    let resp = match req.timeout(m.timeout).send().await {
        Ok(r) => r,
        Err(e) => return (Phase::Error, format!("transport: {e}")),
    };
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if !(200..300).contains(&status) {
        return (
            Phase::Error,
            format!("received non 2xx response code: {status}"),
        );
    }
    let result = match serde_json::from_str::<Value>(&body) {
        Ok(doc) => match jsonpath_first(&m.json_path, &doc) {
            Ok(v) => v,
            Err(e) => return (Phase::Error, e),
        },
        Err(_) => Value::String(body.clone()),
    };
    (
        evaluate_result(&result, &m.success, &m.failure),
        result.to_string(),
    )
}

#[derive(Default, Debug)]
struct Counters {
    count: i64,
    failed: i64,
    inconclusive: i64,
    consecutive_error: i64,
}

/// analysis.go's assessMetricStatus (not terminating).
fn assess(m: &Metric, c: &Counters) -> Phase {
    if c.failed > m.failure_limit {
        return Phase::Failed;
    }
    if c.inconclusive > m.inconclusive_limit {
        return Phase::Inconclusive;
    }
    if c.consecutive_error > m.consecutive_error_limit {
        return Phase::Error;
    }
    let effective = m
        .count
        .or(if m.interval.is_none() { Some(1) } else { None });
    if let Some(n) = effective {
        if c.count >= n {
            return Phase::Successful;
        }
    }
    Phase::Running
}

/// Run the metric to completion; `error_retry` stands for DefaultErrorRetryInterval (10 s),
/// shortened so the test is quick. Returns the final phase and every measurement.
async fn run_metric(
    m: &Metric,
    error_retry: Duration,
    limit: Duration,
) -> (Phase, Vec<(Phase, String)>) {
    let client = reqwest::Client::new();
    let mut c = Counters::default();
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    loop {
        let (p, r) = measure(m, &client).await;
        match p {
            Phase::Successful | Phase::Failed | Phase::Inconclusive => {
                c.count += 1;
                c.consecutive_error = 0;
                if p == Phase::Failed {
                    c.failed += 1;
                }
                if p == Phase::Inconclusive {
                    c.inconclusive += 1;
                }
            }
            Phase::Error => c.consecutive_error += 1,
            Phase::Running => unreachable!(),
        }
        seen.push((p, r));
        let status = assess(m, &c);
        if status != Phase::Running {
            return (status, seen);
        }
        assert!(
            start.elapsed() < limit,
            "metric still running after {limit:?}: {c:?} {:?}",
            seen.last()
        );
        let wait = match (m.interval, p) {
            (Some(i), _) => i,
            (None, Phase::Error) => error_retry,
            (None, _) => unreachable!("no interval and no error: the metric would not requeue"),
        };
        tokio::time::sleep(wait).await;
    }
}

fn args<'a>(base: &str, name: &str, revs: (&str, &str)) -> BTreeMap<&'a str, String> {
    let mut a = BTreeMap::new();
    a.insert("meshgate-url", base.to_owned());
    a.insert("analysis", name.to_owned());
    a.insert("namespace", "shop".to_owned());
    a.insert("baseline-hash", revs.0.to_owned());
    a.insert("canary-hash", revs.1.to_owned());
    a
}

/// The template selects by namespace and pod-template hash; the lab's pods carry revisions, so
/// the test swaps the selectors in the substituted body for the lab's (same shape, same keys).
fn lab_body(m: &mut Metric, revs: (&str, &str), extra: Value) {
    let (b, c) = selectors(revs);
    let body = m.json_body.as_mut().unwrap();
    assert!(body["baseline"]
        .as_str()
        .unwrap()
        .contains("rollouts_pod_template_hash=\""));
    body["baseline"] = json!(b);
    body["canary"] = json!(c);
    body["min_duration"] = json!("4s");
    body["max_duration"] = json!("120s");
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
}

#[test]
fn the_expression_subset_behaves_like_expr_lang() {
    let go = json!("GO");
    assert!(eval_condition(r#"result == "GO""#, &go).unwrap());
    assert!(!eval_condition(r#"result == "NO-GO" || result == "INCONCLUSIVE""#, &go).unwrap());
    assert!(eval_condition(
        r#"result == "NO-GO" || result == "INCONCLUSIVE""#,
        &json!("INCONCLUSIVE")
    )
    .unwrap());
    assert!(
        !eval_condition(r#"result == 1"#, &go).unwrap(),
        "type mismatch is false, not an error"
    );
    assert!(eval_condition(r#"!(result != "GO")"#, &go).unwrap());
    assert!(
        eval_condition("result", &go).is_err(),
        "a non-bool condition is an error"
    );
    let t = template();
    let m = &t["spec"]["metrics"][0];
    let (s, f) = (
        m["successCondition"].as_str().unwrap(),
        m["failureCondition"].as_str().unwrap(),
    );
    assert_eq!(evaluate_result(&json!("GO"), s, f), Phase::Successful);
    assert_eq!(evaluate_result(&json!("NO-GO"), s, f), Phase::Failed);
    assert_eq!(evaluate_result(&json!("INCONCLUSIVE"), s, f), Phase::Failed);
    assert_eq!(
        evaluate_result(&json!("INVALID"), s, f),
        Phase::Failed,
        "a definition that cannot run fails the measurement at once"
    );
    assert_eq!(
        evaluate_result(&json!("SOMETHING"), s, f),
        Phase::Failed,
        "any decision but GO fails; none pauses the Rollout"
    );
    assert_eq!(
        jsonpath_first("{$.decision}", &json!({"verdict": "PENDING"})).unwrap_err(),
        "decision is not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_promotes_go_aborts_no_go_and_rides_out_pending() {
    let l = lab("").await;
    let mut good = metric(&args(&l.base, "argo-good", GOOD));
    lab_body(&mut good, GOOD, json!({}));
    let mut bad = metric(&args(&l.base, "argo-bad", BAD));
    lab_body(&mut bad, BAD, json!({}));
    // An analysis whose baseline never has data: it can only end INCONCLUSIVE.
    let mut dark = metric(&args(&l.base, "argo-dark", GOOD));
    lab_body(
        &mut dark,
        GOOD,
        json!({"baseline": "{role=\"proxy\", revision=\"does-not-exist\"}", "min_duration": "1s", "max_duration": "3s"}),
    );
    let retry = Duration::from_millis(200);
    let limit = Duration::from_secs(150);
    let ((pg, sg), (pb, sb), (pd, sd)) = tokio::join!(
        run_metric(&good, retry, limit),
        run_metric(&bad, retry, limit),
        run_metric(&dark, retry, limit)
    );
    assert_eq!(pg, Phase::Successful, "{sg:?}");
    assert_eq!(pb, Phase::Failed, "{sb:?}");
    assert_eq!(pd, Phase::Failed, "{sd:?}");
    for seen in [&sg, &sb, &sd] {
        // PENDING was answered (with 200) and became Errors that kept the metric Running; no
        // measurement was ever Inconclusive (which would pause the Rollout).
        let pending: Vec<_> = seen[..seen.len() - 1].iter().collect();
        assert!(
            !pending.is_empty(),
            "min_duration makes the first answers PENDING: {seen:?}"
        );
        assert!(
            pending
                .iter()
                .all(|(p, r)| *p == Phase::Error && r == "decision is not found"),
            "{seen:?}"
        );
        assert!(seen.iter().all(|(p, _)| *p != Phase::Inconclusive));
    }
    assert_eq!(sg.last().unwrap().1, "\"GO\"");
    assert_eq!(sb.last().unwrap().1, "\"NO-GO\"");
    assert_eq!(sd.last().unwrap().1, "\"INCONCLUSIVE\"");
    // The analyses were created from the template's body, with its checks.
    let v: Value = reqwest::get(format!("{}/v1/analyses/argo-bad", l.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["spec"]["checks"], json!(["error-rate", "latency-tail"]));
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_slow_and_failing_daemons_are_errors_that_end_in_error() {
    // Nothing listens: transport errors until consecutiveErrorLimit (400) is exceeded.
    let port = crate::support::free_port();
    let m = metric(&args(&format!("http://127.0.0.1:{port}"), "x", GOOD));
    assert_eq!(m.consecutive_error_limit, 400);
    let (p, seen) = run_metric(&m, Duration::from_millis(1), Duration::from_secs(60)).await;
    assert_eq!(p, Phase::Error);
    assert_eq!(seen.len(), 401);
    assert!(seen[0].1.starts_with("transport"), "{:?}", seen[0]);

    // A server slower than timeoutSeconds, and one answering 503: each measurement is an Error.
    let app = axum::Router::new()
        .route(
            "/slow/argo/v1/analyses/{id}",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                axum::Json(json!({"decision": "GO"}))
            }),
        )
        .route(
            "/down/argo/v1/analyses/{id}",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "engine has not ticked yet",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut slow = metric(&args(&format!("http://{addr}/slow"), "x", GOOD));
    slow.timeout = Duration::from_secs(1); // timeoutSeconds: 1 against a 3 s answer
    let client = reqwest::Client::new();
    let (p, r) = measure(&slow, &client).await;
    assert_eq!(p, Phase::Error, "{r}");
    assert!(r.contains("transport"), "{r}");
    let down = metric(&args(&format!("http://{addr}/down"), "x", GOOD));
    let (p, r) = measure(&down, &client).await;
    assert_eq!(
        (p, r.as_str()),
        (Phase::Error, "received non 2xx response code: 503")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_body_fails_the_metric_at_once_with_the_reason() {
    let l = lab("").await;
    // An unknown check, a bad selector, a malformed body (unknown field), an empty check list:
    // each a configuration error that no retry fixes.
    let cases = [
        (
            "argo-invalid-check",
            json!({"checks": ["no-such-check"]}),
            "no-such-check",
        ),
        (
            "argo-invalid-selector",
            json!({"canary": "{revision=\"1-25-0\""}),
            "canary",
        ),
        (
            "argo-invalid-field",
            json!({"min_durationn": "4s"}),
            "min_durationn",
        ),
        (
            "argo-invalid-empty",
            json!({"checks": []}),
            "jsonBody.checks",
        ),
    ];
    for (name, extra, names) in cases {
        let mut m = metric(&args(&l.base, name, GOOD));
        lab_body(&mut m, GOOD, extra);
        let r = reqwest::Client::new()
            .post(&m.url)
            .json(m.json_body.as_ref().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["decision"], "INVALID", "{name}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(names), "{name}: {body}");
        assert!(body["reason"].as_str().unwrap().contains(names), "{body}");
        // Argo's side: the first measurement is Failed and the metric is Failed with it, not
        // 400 Errors ten seconds apart.
        let (p, seen) = run_metric(&m, Duration::from_millis(1), Duration::from_secs(10)).await;
        assert_eq!(p, Phase::Failed, "{name}: {seen:?}");
        assert_eq!(seen.len(), 1, "{name}: {seen:?}");
        assert_eq!(seen[0], (Phase::Failed, "\"INVALID\"".to_owned()));
        // And nothing was created under the name.
        let r = reqwest::get(format!("{}/v1/analyses/{name}", l.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{name}");
    }
    l.shutdown().await;
}
