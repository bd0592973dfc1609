//! The OpenAPI document against the real router: every route in the source is documented and
//! every documented operation is served; each documented operation is called on a running daemon
//! (with the document's example body) and the answer must have a documented status and match the
//! documented schema.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `(path, method)` of every `.route("path", get(..).post(..))` in the daemon's sources: every
/// router, wherever it is (a new module's routes are found without a list to update).
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut files = Vec::new();
    rust_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".route(") {
            let after = &rest[i + ".route(".len()..];
            // The call's text up to its closing parenthesis.
            let mut depth = 1;
            let mut end = 0;
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let call = &after[..end];
            let q1 = call.find('"').unwrap();
            let q2 = q1 + 1 + call[q1 + 1..].find('"').unwrap();
            let path = call[q1 + 1..q2].to_owned();
            let arg = &call[q2 + 1..];
            // Method names at the top level of the second argument: get(..).post(..).
            let mut d = 0;
            let mut ident = String::new();
            for c in arg.chars() {
                match c {
                    '(' => {
                        if d == 0
                            && ["get", "post", "put", "delete", "patch"].contains(&ident.as_str())
                        {
                            out.insert((path.clone(), ident.clone()));
                        }
                        d += 1;
                        ident.clear();
                    }
                    ')' => {
                        d -= 1;
                        ident.clear();
                    }
                    c if c.is_alphanumeric() || c == '_' => ident.push(c),
                    _ => ident.clear(),
                }
            }
            rest = &after[end..];
        }
    }
    out
}

fn doc() -> Value {
    serde_json::from_str(&meshgate::integrations::openapi::DOCUMENT).expect("the document is JSON")
}

fn routes_in_doc(d: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (p, item) in d["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "delete", "patch"] {
            if item.get(m).is_some() {
                out.insert((p.clone(), m.to_owned()));
            }
        }
    }
    out
}

/// A small JSON Schema validator: $ref, type, required, properties, additionalProperties,
/// items, prefixItems, enum. Returns the first problem with its JSON pointer.
fn validate(d: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        let target = &d["components"]["schemas"][name];
        assert!(!target.is_null(), "{at}: $ref {r} names no schema");
        return validate(d, target, v, at);
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let errors: Vec<String> = alts
            .iter()
            .filter_map(|s| validate(d, s, v, at).err())
            .collect();
        return match alts.len() - errors.len() {
            1 => Ok(()),
            0 => Err(format!(
                "{at}: matches no oneOf alternative: {}",
                errors.join(" | ")
            )),
            n => Err(format!("{at}: matches {n} oneOf alternatives, not one")),
        };
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not {types:?}"));
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                return Err(format!("{at}: missing required {r}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(d, s, x, &format!("{at}/{k}"))?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => return Err(format!("{at}: undocumented property {k}")),
                    s @ Value::Object(_) => validate(d, s, x, &format!("{at}/{k}"))?,
                    _ => {}
                },
            }
        }
    }
    if let Some(a) = v.as_array() {
        if let Some(pi) = schema["prefixItems"].as_array() {
            for (i, (s, x)) in pi.iter().zip(a).enumerate() {
                validate(d, s, x, &format!("{at}/{i}"))?;
            }
        } else if schema.get("items").is_some() {
            for (i, x) in a.iter().enumerate() {
                validate(d, &schema["items"], x, &format!("{at}/{i}"))?;
            }
        }
    }
    Ok(())
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let src = routes_in_source();
    let d = doc();
    let documented = routes_in_doc(&d);
    assert!(src.len() >= 15, "the scanner found too few routes: {src:?}");
    let missing: Vec<_> = src.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&src).collect();
    assert!(
        missing.is_empty(),
        "routes without documentation: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[test]
fn the_validator_rejects_what_it_should() {
    let d = doc();
    let s = json!({"$ref": "#/components/schemas/ErrorDoc"});
    assert!(validate(&d, &s, &json!({"error": {"code": "x", "message": "y"}}), "").is_ok());
    assert!(validate(&d, &s, &json!({"error": {"code": "x"}}), "").is_err());
    assert!(validate(
        &d,
        &json!({"$ref": "#/components/schemas/Verdict"}),
        &json!("MAYBE"),
        ""
    )
    .is_err());
    let req = json!({"$ref": "#/components/schemas/AnalysisConfig"});
    assert!(validate(
        &d,
        &req,
        &json!({"name": "a", "baseline": "{}", "canary": "{}", "colour": 1}),
        ""
    )
    .is_err());
    // Generated from the types: a required field of the verdict document, and its nested evidence.
    let vd = &d["components"]["schemas"]["VerdictDoc"];
    assert!(vd["required"]
        .as_array()
        .unwrap()
        .contains(&json!("data_quality")));
    assert_eq!(
        vd["properties"]["checks"]["items"]["$ref"],
        "#/components/schemas/CheckEvidence"
    );
    assert!(d["components"]["schemas"]["TestEvidence"]["properties"]
        .get("ratio_upper_bound")
        .is_some());
    // The Argo answer is one of a measurement and an INVALID definition, never neither.
    let argo = &d["paths"]["/argo/v1/analyses/{id}"]["post"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let invalid = json!({"id": "a", "verdict": "INVALID", "decided": true, "decision": "INVALID",
        "reason": "r", "error": {"code": "invalid_analysis", "message": "m"}});
    assert!(validate(&d, argo, &invalid, "").is_ok());
    let mut half = invalid.clone();
    half["decision"] = json!("GO");
    assert!(validate(&d, argo, &half, "").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_documented() {
    let stop = tokio_util::sync::CancellationToken::new();
    // A simulated mesh, so the evidence holds counts and bounds, and a plan, so the plan routes
    // answer with their documents.
    let no_fault = meshgate::sim::Fault {
        error_rate: None,
        latency_factor: 1.0,
    };
    let mesh = crate::support::mesh(41, crate::support::GOOD, no_fault, &stop).await;
    let mut cfg = meshgate::config::Config::from_toml(
        "[scrape]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n[judge]\nmin_duration = \"1s\"\nmax_duration = \"1h\"\n\
         [plan]\nname = \"1.24 -> 1.25\"\nfrom_revision = \"1-24-2\"\nto_revision = \"1-25-0\"\n\
         [[plan.waves]]\nname = \"first\"\nnamespaces = [\"default\"]\nsoak = \"10m\"\n",
        "openapi",
    )
    .unwrap();
    cfg.targets.extend(
        mesh.targets()
            .into_iter()
            .map(|t| meshgate::config::StaticTarget {
                url: t.url,
                labels: t.labels,
            }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(
        cfg,
        meshgate::judge::Catalog::builtin(),
        listener,
        stop.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let d = doc();
    let c = reqwest::Client::new();
    // Create first so the {id} operations have something to show, and let it collect data.
    let example = &d["paths"]["/v1/analyses"]["post"]["requestBody"]["content"]["application/json"]
        ["example"];
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(example)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let evidence: Value = c
        .get(format!("{base}/v1/analyses/wave-1/verdict"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        evidence["checks"][0]["tests"][0]["canary"]["exposure"].as_f64() > Some(0.0),
        "{evidence}"
    );
    let mut order: Vec<(String, String)> = routes_in_doc(&d).into_iter().collect();
    // Deletion last.
    order.sort_by_key(|(_, m)| m == "delete");
    let mut seen = 0;
    for (path, method) in order {
        let op = &d["paths"][&path][&method];
        let id = if path.starts_with("/canary/") && method == "post" {
            "meshgate"
        } else {
            "wave-1"
        };
        let url = format!(
            "{base}{}",
            path.replace("{id}", id).replace("{gate}", "event")
        );
        let mut req = c.request(method.to_uppercase().parse().unwrap(), &url);
        if path == "/api/v1/query" {
            // GET takes the query in the URL, POST in a form body (as Prometheus does).
            let form =
                &op["requestBody"]["content"]["application/x-www-form-urlencoded"]["example"];
            req = match form["query"].as_str() {
                Some(q) => req.form(&[("query", q)]),
                None => req.query(&[("query", op["parameters"][0]["example"].as_str().unwrap())]),
            };
        }
        let body_example = &op["requestBody"]["content"]["application/json"]["example"];
        if !body_example.is_null() && path != "/v1/analyses" {
            req = req.json(body_example);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16().to_string();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = r.text().await.unwrap();
        let documented = &op["responses"][&status];
        assert!(
            documented.is_object(),
            "{method} {path}: status {status} is not documented ({text})"
        );
        if ctype.starts_with("application/json") {
            let body: Value = serde_json::from_str(&text).unwrap();
            let schema = &documented["content"]["application/json"]["schema"];
            assert!(
                !schema.is_null(),
                "{method} {path} {status}: JSON answer without a documented schema"
            );
            validate(&d, schema, &body, "")
                .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}\n{body:#}"));
        }
        seen += 1;
    }
    assert_eq!(seen, routes_in_doc(&d).len());
    // Every request example validates against its own schema.
    for (path, item) in d["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let content = &op["requestBody"]["content"]["application/json"];
            if !content["example"].is_null() {
                validate(&d, &content["schema"], &content["example"], "")
                    .unwrap_or_else(|e| panic!("{m} {path} example: {e}"));
            }
        }
    }
    stop.cancel();
    running.join().await;
}
