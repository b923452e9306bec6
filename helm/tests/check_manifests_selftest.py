#!/usr/bin/env python3
"""Mutation tests for check_manifests.py: each mutation of a good render must be caught.

usage: check_manifests_selftest.py DIR   (DIR holds default.yaml, monitoring.yaml, workers.yaml
                                          as rendered by run.sh)
"""
import copy
import pathlib
import subprocess
import sys
import tempfile

import yaml

here = pathlib.Path(__file__).resolve().parent
renders = pathlib.Path(sys.argv[1])


def load(name):
    return [d for d in yaml.safe_load_all((renders / f"{name}.yaml").read_text()) if d]


def first(docs, kind, comp=None):
    return next(d for d in docs if d["kind"] == kind and
                (comp is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == comp))


def container(docs, comp="federation-gate"):
    w = first(docs, "Deployment", comp)
    return w["spec"]["template"]["spec"]["containers"][0]


def m_rorootfs(d): container(d)["securityContext"]["readOnlyRootFilesystem"] = False
def m_nodeny(d): d.remove(next(p for p in d if p["kind"] == "NetworkPolicy" and p["spec"]["podSelector"] == {}))
def m_hostport(d): container(d)["ports"][0]["hostPort"] = 8448
def m_secretenv(d): container(d).setdefault("env", []).append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
def m_digest(d): container(d)["image"] = container(d)["image"].split("@")[0]
def m_rbac(d): d.append({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "r", "namespace": "govmx"}, "rules": []})
def m_token(d): first(d, "Deployment", "federation-gate")["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
def m_uid(d): container(d)["securityContext"]["runAsUser"] = 1000
def m_pdb(d): first(d, "Deployment", "exporter")["spec"]["replicas"] = 2
def m_np_missing(d): d.remove(first(d, "NetworkPolicy", "exporter"))
def m_secret_cm(d): first(d, "ConfigMap", "exporter")["data"]["x"] = "password: hunter2"
def m_default_ns(d): first(d, "Service", "exporter")["metadata"]["namespace"] = "default"
def m_sm_port(d): first(d, "ServiceMonitor", "exporter")["spec"]["endpoints"][0]["port"] = "nope"
def m_sm_missing(d): d.remove(first(d, "ServiceMonitor", "media-scanner"))
def m_rule_expr(d):
    r = first(d, "PrometheusRule")
    r["spec"]["groups"][0]["rules"][0]["expr"] += " * 2"
def m_dashboard(d):
    cm = next(x for x in d if x["kind"] == "ConfigMap" and "grafana_dashboard" in x["metadata"]["labels"])
    k = next(iter(cm["data"]))
    cm["data"][k] = cm["data"][k].replace("govmx", "gövmx", 1)
def m_redis_peer(d):
    first(d, "NetworkPolicy", "redis")["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})


CASES = [
    ("default", m_rorootfs, "readOnlyRootFilesystem must be true"),
    ("default", m_nodeny, "no namespace-wide default-deny"),
    ("default", m_hostport, "hostPort set"),
    ("default", m_secretenv, "from a Secret (mount it as a file)"),
    ("default", m_digest, "is not pinned"),
    ("default", m_rbac, "must not render RBAC"),
    ("default", m_token, "automountServiceAccountToken must be false"),
    ("default", m_uid, "runAsUser must be > 10000"),
    ("default", m_pdb, "no PodDisruptionBudget"),
    ("default", m_np_missing, "NetworkPolicy selects this pod besides the default deny"),
    ("default", m_secret_cm, "looks like it carries a secret"),
    ("default", m_default_ns, "explicit namespace other than default"),
    ("monitoring", m_sm_port, "is not a port of Service"),
    ("monitoring", m_sm_missing, "has no ServiceMonitor"),
    ("monitoring", m_rule_expr, "groups differ from deploy/prometheus/govmx-alerts.yml"),
    ("monitoring", m_dashboard, "differs from deploy/grafana/dashboards"),
    ("workers", m_redis_peer, "is not an allowed client"),
]

failed = 0
for scenario, mutate, expect in CASES:
    docs = copy.deepcopy(load(scenario))
    mutate(docs)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f)
    r = subprocess.run([sys.executable, str(here / "check_manifests.py"), f.name], capture_output=True, text=True)
    if r.returncode == 0 or expect not in r.stderr:
        failed += 1
        print(f"NOT CAUGHT: {scenario}/{mutate.__name__}: expected {expect!r}\n{r.stderr}", file=sys.stderr)
if failed:
    sys.exit(f"{failed} mutation(s) not caught by check_manifests.py")
print(f"check_manifests.py catches all {len(CASES)} mutations")
