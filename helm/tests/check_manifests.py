#!/usr/bin/env python3
"""Our own checks over one rendered chart (a multi-document YAML file).

usage: check_manifests.py RENDERED.yaml [--sentinel REGISTRY PULLSECRET]

Every pod: Pod Security "restricted" (+ read-only root filesystem, UID > 10000), no service-account
token, resources and probes, images pinned by digest, selected by an ingress AND an egress
NetworkPolicy besides the default deny; a namespace-wide default deny exists; a PDB covers every
workload with more than one replica; no Secret values in env or ConfigMaps; every Ingress and
HTTPRoute backend is a rendered Service port.
"""
import re
import sys

import yaml

DIGEST = re.compile(r"^[^@]+:[^@:/]+@sha256:[0-9a-f]{64}$")
SECRETISH = re.compile(r"(password|secret_key|shared_secret|access_token|private_key)\s*:\s*\S", re.I)
errors = []


def err(obj, msg):
    errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {msg}")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()) and \
        not selector.get("matchExpressions")


def main():
    path = sys.argv[1]
    sentinel = sys.argv[3:5] if len(sys.argv) >= 5 and sys.argv[2] == "--sentinel" else None
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    pods, policies, pdbs = [], [], []
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
        elif kind == "ConfigMap":
            for key, text in (d.get("data") or {}).items():
                if SECRETISH.search(text or ""):
                    err(d, f"key {key} looks like it carries a secret")
        elif kind == "Secret":
            err(d, "the chart must not render Secrets (secrets are referenced, never templated)")

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
            if main_container and not (c.get("livenessProbe") and c.get("readinessProbe")):
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

    if errors:
        print(f"{path}: {len(errors)} problem(s)", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{path}: {len(pods)} workloads, {len(policies)} NetworkPolicies, {len(pdbs)} PDBs: ok")


main()
