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

/// Every document of the kustomize base, read from the files its kustomization.yaml lists (the
/// same documents `kubectl kustomize deploy/kubernetes` prints; `.ci/run` validates that output).
fn kustomize_base() -> Vec<Value> {
    let k = &docs("deploy/kubernetes/kustomization.yaml")[0];
    assert_eq!(k["kind"], "Kustomization");
    k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .flat_map(|r| docs(&format!("deploy/kubernetes/{}", r.as_str().unwrap())))
        .collect()
}

#[test]
fn configmap_config_loads_and_queries_match_the_pack() {
    let all = kustomize_base();
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
            "{name} differs from queries/ (run deploy/sync-queries.py)"
        );
        std::fs::write(dir.path().join(&name), in_cm).unwrap();
        n += 1;
    }
    assert_eq!(q["data"].as_mapping().unwrap().len(), n);
    let cat = meshgate::config::load_checks_dir(dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(cat.names().len(), n);
    // The deployment mounts what the config reads: the checks, the store on the claim.
    let dep = find(&all, "Deployment", "meshgate");
    let text = serde_yaml::to_string(dep).unwrap();
    assert!(text.contains("/etc/meshgate/queries") && text.contains("/var/lib/meshgate"));
    let store = c.store.path.as_ref().expect("the base keeps a store");
    assert!(store.starts_with("/var/lib/meshgate"), "{store:?}");
    let vols = dep["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    let claim = vols
        .iter()
        .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .expect("the store is on a PersistentVolumeClaim");
    find(&all, "PersistentVolumeClaim", claim);
    // The daemon's own discovery (istiods included), not a kubectl sidecar.
    assert!(c.discovery.kubernetes.is_some());
    let containers = dep["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container: meshgate");
    // [auth] reads the variable the Deployment fills from the meshgate-auth Secret.
    let var = c.auth.tokens_env.as_deref().expect("auth on");
    let env = containers[0]["env"].as_sequence().unwrap();
    let e = env
        .iter()
        .find(|e| e["name"] == var)
        .unwrap_or_else(|| panic!("{var} not set in the Deployment"));
    assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "meshgate-auth");
    // One RBAC: the binding's subject is the service account the pod runs as.
    let roles: Vec<_> = all.iter().filter(|d| d["kind"] == "ClusterRole").collect();
    assert_eq!(roles.len(), 1);
    let sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let binding = find(&all, "ClusterRoleBinding", "meshgate-discovery");
    assert_eq!(binding["subjects"][0]["name"], sa);
    assert_eq!(binding["subjects"][0]["namespace"], "meshgate");
    find(&all, "ServiceAccount", sa);
    let rules = serde_yaml::to_string(&roles[0]["rules"]).unwrap();
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !rules.contains(verb),
            "discovery RBAC is read-only: {rules}"
        );
    }
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
