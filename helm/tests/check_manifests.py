#!/usr/bin/env python3
"""Our own checks over one rendered chart (a multi-document YAML file).

usage: check_manifests.py RENDERED.yaml [--sentinel REGISTRY PULLSECRET]

Every pod: Pod Security "restricted" (+ read-only root filesystem, UID > 10000), no service-account
token, resources and probes, images pinned by digest, selected by an ingress AND an egress
NetworkPolicy besides the default deny; a namespace-wide default deny exists; a PDB covers every
workload with more than one replica; no Secret values in env or ConfigMaps; every Ingress and
HTTPRoute backend is a rendered Service port.

Monitoring (CRDs kubernetes-validate cannot check): every ServiceMonitor is
monitoring.coreos.com/v1, selects exactly one rendered Service in its namespace and names a port
of it; when ServiceMonitors are rendered, every Service port named admin/metrics has one. The
PrometheusRule's groups (names, alerts, expr, for, labels) equal deploy/prometheus/govmx-alerts.yml;
each dashboard ConfigMap carries the sidecar label and holds a dashboard of deploy/grafana/dashboards
byte for byte. Data stores: only Synapse pods may reach Redis; only Synapse pods and the backup
job may reach the in-chart PostgreSQL.
"""
import json
import pathlib
import re
import sys

import yaml

DIGEST = re.compile(r"^[^@]+:[^@:/]+@sha256:[0-9a-f]{64}$")
SECRETISH = re.compile(r"(password|secret_key|shared_secret|access_token|private_key)\s*:\s*\S", re.I)
errors = []
REPO = pathlib.Path(__file__).resolve().parents[2]


def err(obj, msg):
    errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {msg}")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()) and \
        not selector.get("matchExpressions")


def main():
    path = sys.argv[1]
    sentinel = sys.argv[3:5] if len(sys.argv) >= 5 and sys.argv[2] == "--sentinel" else None
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    pods, policies, pdbs, monitors, rules, dashboards = [], [], [], [], [], []
    for d in docs:
        kind = d["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            pods.append(d)
        elif kind == "CronJob":
            pods.append({**d, "spec": d["spec"]["jobTemplate"]["spec"]})
        elif kind == "NetworkPolicy":
            policies.append(d)
        elif kind == "PodDisruptionBudget":
            pdbs.append(d)
        elif kind == "ServiceMonitor":
            monitors.append(d)
        elif kind == "PrometheusRule":
            rules.append(d)
        elif kind == "ConfigMap":
            if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "monitoring":
                dashboards.append(d)
            for key, text in (d.get("data") or {}).items():
                if SECRETISH.search(text or ""):
                    err(d, f"key {key} looks like it carries a secret")
        elif kind == "Secret":
            err(d, "the chart must not render Secrets (secrets are referenced, never templated)")
        if kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
            err(d, "the chart must not render RBAC (no pod needs API access)")
        if kind not in ("ClusterRole", "ClusterRoleBinding", "Namespace") and \
                d["metadata"].get("namespace") in (None, "", "default"):
            err(d, "every object needs an explicit namespace other than default")

    # Routing: every Ingress / HTTPRoute backend is a rendered Service port.
    services = {(d["metadata"]["name"], port["port"]) for d in docs if d["kind"] == "Service"
                for port in d["spec"]["ports"]}
    for d in docs:
        backends = []
        if d["kind"] == "Ingress":
            for rule in d["spec"]["rules"]:
                for route in rule["http"]["paths"]:
                    svc = route["backend"]["service"]
                    backends.append((svc["name"], svc["port"]["number"]))
        elif d["kind"] == "HTTPRoute":
            if d["apiVersion"] != "gateway.networking.k8s.io/v1" or not d["spec"].get("parentRefs"):
                err(d, "HTTPRoute needs apiVersion gateway.networking.k8s.io/v1 and parentRefs")
            for rule in d["spec"]["rules"]:
                if not all(m["path"]["type"] == "PathPrefix" for m in rule["matches"]):
                    err(d, "unexpected match type")
                backends += [(b["name"], b["port"]) for b in rule["backendRefs"]]
        for b in backends:
            if b not in services:
                err(d, f"backend {b[0]}:{b[1]} is not a rendered Service port")

    deny = [p for p in policies if p["spec"].get("podSelector") == {}
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        errors.append("no namespace-wide default-deny NetworkPolicy (podSelector {}, Ingress+Egress, no rules)")
    if not pods:
        errors.append("no workloads rendered")

    for w in pods:
        tpl = w["spec"]["template"]
        spec, labels = tpl["spec"], tpl["metadata"]["labels"]
        psc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            err(w, "automountServiceAccountToken must be false")
        if spec.get("serviceAccountName") in (None, "", "default"):
            err(w, "must not use the default ServiceAccount")
        for f in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(f):
                err(w, f"{f} set")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            err(w, "pod seccompProfile must be RuntimeDefault")
        if psc.get("runAsNonRoot") is not True:
            err(w, "pod runAsNonRoot must be true")
        for v in spec.get("volumes", []):
            allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
            if not set(v) - {"name"} <= allowed:
                err(w, f"volume {v['name']} has a type outside PSS restricted")
        containers = [(c, False) for c in spec.get("initContainers", [])] + [(c, True) for c in spec["containers"]]
        for c, main_container in containers:
            n = f"container {c['name']}"
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                err(w, f"{n}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                err(w, f"{n}: privileged")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"] or (sc.get("capabilities") or {}).get("add"):
                err(w, f"{n}: capabilities must drop ALL and add nothing")
            if sc.get("readOnlyRootFilesystem") is not True:
                err(w, f"{n}: readOnlyRootFilesystem must be true")
            if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                err(w, f"{n}: seccomp RuntimeDefault")
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if not isinstance(uid, int) or uid <= 10000:
                err(w, f"{n}: runAsUser must be > 10000 (got {uid})")
            if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                err(w, f"{n}: runAsNonRoot")
            if not DIGEST.match(c.get("image", "")):
                err(w, f"{n}: image {c.get('image')!r} is not pinned as repo:tag@sha256:<64 hex>")
            if sentinel and not c["image"].startswith(sentinel[0] + "/"):
                err(w, f"{n}: image {c['image']} ignores global.imageRegistry")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set((res.get(kind) or {})):
                    err(w, f"{n}: resources.{kind} cpu+memory required")
            if any(p.get("hostPort") for p in c.get("ports") or []):
                err(w, f"{n}: hostPort set")
            if main_container and w["kind"] not in ("Job", "CronJob") and not (c.get("livenessProbe") and c.get("readinessProbe")):
                err(w, f"{n}: liveness and readiness probes required")
            for e in c.get("env", []):
                if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                    err(w, f"{n}: env {e['name']} from a Secret (mount it as a file)")
        if sentinel and sentinel[1] not in [s["name"] for s in spec.get("imagePullSecrets", [])]:
            err(w, f"pull secret {sentinel[1]} missing")
        selected = [p for p in policies if p not in deny and selects(p["spec"]["podSelector"], labels)]
        for direction in ("Ingress", "Egress"):
            if not any(direction in p["spec"].get("policyTypes", []) for p in selected):
                err(w, f"no {direction} NetworkPolicy selects this pod besides the default deny")
        if w["spec"].get("replicas", 1) > 1 and not any(selects(p["spec"]["selector"], labels) for p in pdbs):
            err(w, f"{w['spec']['replicas']} replicas but no PodDisruptionBudget")
        if w["spec"].get("replicas", 1) > 1 and {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} - {
                t["topologyKey"] for t in spec.get("topologySpreadConstraints") or []}:
            err(w, "replicated workload without topology spread over hosts and zones")

    check_monitoring(docs, monitors, rules, dashboards)
    check_data_stores(pods, policies)

    if errors:
        print(f"{path}: {len(errors)} problem(s)", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{path}: {len(pods)} workloads, {len(policies)} NetworkPolicies, {len(pdbs)} PDBs, "
          f"{len(monitors)} ServiceMonitors, {len(rules)} PrometheusRules, {len(dashboards)} dashboards"
          f"{', sentinel registry and pull secret on every pod' if sentinel else ''}: ok")


def check_monitoring(docs, monitors, rules, dashboards):
    services = [d for d in docs if d["kind"] == "Service"]
    covered = set()
    for m in monitors:
        if m["apiVersion"] != "monitoring.coreos.com/v1":
            err(m, f"apiVersion {m['apiVersion']} is not monitoring.coreos.com/v1")
        ns = m["metadata"].get("namespace")
        if (m["spec"].get("namespaceSelector") or {}).get("matchNames") != [ns]:
            err(m, "namespaceSelector.matchNames must be its own namespace")
        hits = [s for s in services if s["metadata"].get("namespace") == ns
                and selects(m["spec"]["selector"], s["metadata"].get("labels") or {})]
        if len(hits) != 1:
            err(m, f"selector matches {len(hits)} Services (want exactly 1)")
            continue
        ports = {p.get("name") for p in hits[0]["spec"]["ports"]}
        for e in m["spec"].get("endpoints") or [{}]:
            if e.get("port") not in ports:
                err(m, f"endpoint port {e.get('port')!r} is not a port of Service {hits[0]['metadata']['name']} {sorted(ports)}")
            else:
                covered.add((hits[0]["metadata"]["name"], e["port"]))
            if not str(e.get("path", "")).endswith("metrics"):
                err(m, f"endpoint path {e.get('path')!r} is not a metrics path")
    if monitors:
        for s in services:
            for p in s["spec"]["ports"]:
                if p.get("name") in ("admin", "metrics") and (s["metadata"]["name"], p["name"]) not in covered:
                    err(s, f"port {p['name']} has no ServiceMonitor")
    if rules:
        source = __import__("yaml").safe_load((REPO / "deploy/prometheus/govmx-alerts.yml").read_text())
        def essence(groups):
            return [(g["name"], [(r.get("alert") or r.get("record"), r["expr"], r.get("for"), r.get("labels"))
                                 for r in g["rules"]]) for g in groups]
        for r in rules:
            if r["apiVersion"] != "monitoring.coreos.com/v1":
                err(r, f"apiVersion {r['apiVersion']} is not monitoring.coreos.com/v1")
            if essence(r["spec"]["groups"]) != essence(source["groups"]):
                err(r, "groups differ from deploy/prometheus/govmx-alerts.yml (names, expr, for, labels)")
    for cm in dashboards:
        labels = cm["metadata"].get("labels") or {}
        if labels.get("grafana_dashboard") is None and not any(k.startswith("grafana") for k in labels):
            err(cm, "no Grafana sidecar label")
        for key, text in (cm.get("data") or {}).items():
            src = REPO / "deploy/grafana/dashboards" / key
            if not src.is_file():
                err(cm, f"{key} is not a dashboard of deploy/grafana/dashboards")
            elif src.read_text().rstrip("\n") != text.rstrip("\n"):
                err(cm, f"{key} differs from {src.relative_to(REPO)}")
            else:
                json.loads(text)


def check_data_stores(pods, policies):
    """Redis: only Synapse pods; in-chart PostgreSQL: only Synapse pods and the backup job."""
    allowed = {"redis": lambda c: c == "synapse" or c.startswith("synapse-"),
               "postgresql": lambda c: c == "synapse" or c.startswith("synapse-") or c == "backup"}
    for w in pods:
        comp = w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        if comp not in allowed:
            continue
        labels = w["spec"]["template"]["metadata"]["labels"]
        for p in policies:
            if not p["spec"].get("podSelector") or not selects(p["spec"]["podSelector"], labels):
                continue
            for rule in p["spec"].get("ingress") or []:
                peers = rule.get("from")
                if not peers:
                    err(p, f"{comp}: an ingress rule without 'from' admits everyone")
                for peer in peers or []:
                    sel = (peer.get("podSelector") or {}).get("matchLabels") or {}
                    if set(peer) != {"podSelector"} or not allowed[comp](sel.get("app.kubernetes.io/component", "")):
                        err(p, f"{comp}: ingress peer {peer} is not an allowed client")


main()
