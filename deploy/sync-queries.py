#!/usr/bin/env python3
"""Rewrite the meshgate-queries ConfigMap in deploy/kubernetes/queries.yaml from queries/*.toml.

Run after changing a check file; tests/deploy.rs fails while the copies differ.
"""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
manifest = root / "deploy" / "kubernetes" / "queries.yaml"
docs = manifest.read_text().split("\n---\n")
for i, doc in enumerate(docs):
    if re.search(r"^kind: ConfigMap$", doc, re.M) and re.search(r"^  name: meshgate-queries$", doc, re.M):
        head = doc[: doc.index("\ndata:\n")]
        body = ["data:"]
        for f in sorted((root / "queries").glob("*.toml")):
            body.append(f"  {f.name}: |")
            for line in f.read_text().splitlines():
                body.append(f"    {line}" if line else "")
        docs[i] = head + "\n" + "\n".join(body)
        break
else:
    raise SystemExit("no meshgate-queries ConfigMap in " + str(manifest))
manifest.write_text("\n---\n".join(docs) + ("" if docs[-1].endswith("\n") else "\n"))
print("synced", manifest)
