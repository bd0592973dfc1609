//! deploy/ stays true to the code: the ConfigMap's configuration loads, its checks are the
//! queries/ files, the Flagger examples name every gate at its URL with metadata meshgate
//! accepts, and the MetricTemplate's query is one the query endpoint understands.

use serde_yaml::Value;

fn docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} missing"))
}

#[test]
fn configmap_config_loads_and_queries_match_the_pack() {
    let all = docs("deploy/kubernetes/meshgate.yaml");
    let cfg = find(&all, "ConfigMap", "meshgate-config");
    let toml = cfg["data"]["meshgate.toml"].as_str().unwrap();
    let c =
        meshgate::config::Config::from_toml(toml, "configmap").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.alerts.alertmanager.len(), 1);
    let q = find(&all, "ConfigMap", "meshgate-queries");
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(format!("{}/queries", env!("CARGO_MANIFEST_DIR"))).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        let in_cm = q["data"][name.as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("{name} not in the ConfigMap"));
        assert_eq!(
            in_cm,
            std::fs::read_to_string(&p).unwrap(),
            "{name} differs from queries/"
        );
        std::fs::write(dir.path().join(&name), in_cm).unwrap();
        n += 1;
    }
    assert_eq!(q["data"].as_mapping().unwrap().len(), n);
    let cat = meshgate::config::load_checks_dir(dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(cat.names().len(), n);
    // The deployment mounts what the config reads.
    let dep = find(&all, "Deployment", "meshgate");
    let text = serde_yaml::to_string(dep).unwrap();
    assert!(text.contains("/etc/meshgate/queries") && text.contains("/var/run/meshgate/targets"));
    assert!(toml.contains("/var/run/meshgate/targets/*.json"));
}

#[test]
fn flagger_examples_name_every_gate_and_a_valid_query() {
    let canary = &docs("deploy/flagger/canary.yaml")[0];
    let hooks = canary["spec"]["analysis"]["webhooks"]
        .as_sequence()
        .unwrap();
    let gates: Vec<&str> = hooks.iter().map(|h| h["type"].as_str().unwrap()).collect();
    for (g, _) in meshgate::integrations::flagger::Gate::ALL {
        assert!(gates.contains(&g), "{g} has no webhook");
    }
    for h in hooks {
        let t = h["type"].as_str().unwrap();
        assert!(
            h["url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/flagger/{t}")),
            "{h:?}"
        );
        if let Some(m) = h["metadata"].as_mapping() {
            for k in ["baseline", "canary"] {
                let sel = m.get(k).and_then(|v| v.as_str()).unwrap();
                meshgate::cohort::Selector::parse(sel).unwrap_or_else(|e| panic!("{k}: {e}"));
            }
        }
    }
    let mt = &docs("deploy/flagger/metrictemplate.yaml")[0];
    let q = mt["spec"]["query"]
        .as_str()
        .unwrap()
        .replace("{{ target }}", "reviews")
        .replace("{{ namespace }}", "shop");
    assert_eq!(
        meshgate::integrations::promql::parse(&q).unwrap(),
        meshgate::integrations::promql::Expr::Select(
            "meshgate_verdict".into(),
            vec![("analysis".into(), true, "reviews.shop".into())]
        )
    );
}
