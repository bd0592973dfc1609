#!/usr/bin/env python3
"""Validate deploy/ offline: Argo and Flagger examples against their CRD schemas
(tests/fixtures/crds/, openAPIV3Schema of the matching kind and version, with jsonschema), and
the PodMonitor's shape (no CRD schema is bundled for it). Kubernetes built-in kinds are checked by
kubernetes-validate in .ci/run."""
import glob
import sys

import jsonschema
import yaml

crds = {}
for path in glob.glob("tests/fixtures/crds/*.yaml"):
    for crd in yaml.safe_load_all(open(path)):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            crds[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]

failures = 0
checked = 0
for path in sorted(glob.glob("deploy/argo/*.yaml") + glob.glob("deploy/flagger/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        key = (doc["apiVersion"], doc["kind"])
        schema = crds.get(key)
        if schema is None:
            print(f"FAIL {path}: no CRD schema for {key}")
            failures += 1
            continue
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            print(f"FAIL {path} {doc['kind']}/{doc['metadata']['name']}: {'/'.join(map(str, e.path))}: {e.message}")
        failures += len(errors)
        checked += 1
        if not errors:
            print(f"ok   {path} {doc['kind']}/{doc['metadata']['name']} against {key[0]}")

pm = yaml.safe_load(open("deploy/kubernetes/podmonitor.yaml"))
pm_schema = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "object", "required": ["port", "path"]},
                }
            },
        },
    },
}
for e in jsonschema.Draft7Validator(pm_schema).iter_errors(pm):
    print(f"FAIL deploy/kubernetes/podmonitor.yaml: {e.message}")
    failures += 1
checked += 1

if checked < 4:
    print(f"FAIL only {checked} documents checked")
    failures += 1
print(f"{checked} documents checked, {failures} problem(s)")
sys.exit(1 if failures else 0)
