#!/usr/bin/env python3
"""Sanity of deploy/docker/*.Dockerfile (they cannot be built here; hadolint lints them too).

usage: check_dockerfiles.py RENDERED.yaml   (a render with the module enabled, e.g. staging)

Each Dockerfile: multi-stage (a build stage and a runtime stage), runtime image distroless (or
busybox for the module image's cp), numeric non-root USER > 10000 equal to the runAsUser of the
chart container that runs the image, exactly one ENTRYPOINT; Rust images build a [[bin]] that the
named crate declares, with --locked; nothing key-like copied in. Every govmx image of the chart
has a Dockerfile.
"""
import pathlib
import re
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
# Dockerfile -> (images.<key> in values.yaml, chart container name); None: not deployed by the chart.
IMAGES = {
    "federation-gate.Dockerfile": ("federationGate", "federation-gate"),
    "media-scanner.Dockerfile": ("mediaScanner", "media-scanner"),
    "exporter.Dockerfile": ("exporter", "exporter"),
    "agency-ca.Dockerfile": ("agencyCa", "agency-ca"),
    "synapse-module.Dockerfile": ("synapseModule", "install-govmx-module"),
    "govmx.Dockerfile": None,
}
errors = []
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
uids = {}
for d in docs:
    if d["kind"] in ("Deployment", "StatefulSet"):
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            uids[c["name"]] = c["securityContext"]["runAsUser"]
values = yaml.safe_load((REPO / "helm/govmx/values.yaml").read_text())
govmx_images = {k for k, v in values["images"].items() if v["repository"].startswith("govmx/")}
mapped = {v[0] for v in IMAGES.values() if v}
if govmx_images - mapped:
    errors.append(f"govmx images without a Dockerfile: {sorted(govmx_images - mapped)}")

for path in sorted((REPO / "deploy/docker").glob("*.Dockerfile")):
    name = path.name
    text = path.read_text()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    if name not in IMAGES:
        errors.append(f"{name}: not in check_dockerfiles.py's IMAGES table")
        continue
    if len(froms) < 2:
        errors.append(f"{name}: not multi-stage")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(lines), re.M))
    final = froms[-1].split()[1]
    final = args.get(final.strip("${}"), final)
    if not re.search(r"gcr\.io/distroless/|/busybox:", final):
        errors.append(f"{name}: runtime image {final} is neither distroless nor busybox")
    if ":latest" in text or re.search(r"FROM [^:$\s]+\s", text):
        errors.append(f"{name}: an image without an explicit tag")
    users = [l.split()[1] for l in lines if l.upper().startswith("USER ")]
    if not users or not re.fullmatch(r"\d+:\d+", users[-1]) or int(users[-1].split(":")[0]) <= 10000:
        errors.append(f"{name}: final USER must be numeric UID:GID > 10000 (got {users})")
    elif IMAGES[name]:
        want = uids.get(IMAGES[name][1])
        if want is None:
            errors.append(f"{name}: chart container {IMAGES[name][1]} not in the render")
        elif int(users[-1].split(":")[0]) != want:
            errors.append(f"{name}: USER {users[-1]} but the chart runs {IMAGES[name][1]} as {want}")
    if sum(l.upper().startswith("ENTRYPOINT") for l in lines) != 1:
        errors.append(f"{name}: exactly one ENTRYPOINT (one process per container)")
    for crate, binary in re.findall(r"cargo build --locked --release -p (\S+) --bin (\S+)", text):
        manifest = REPO / "crates" / crate / "Cargo.toml"
        if not manifest.is_file() or f'name = "{binary}"' not in manifest.read_text():
            errors.append(f"{name}: crate {crate} has no [[bin]] {binary}")
    if "cargo build" in text and "--locked" not in text:
        errors.append(f"{name}: cargo build without --locked")
    if re.search(r"(COPY|ADD)\s+\S*\.(key|pem|p12)\b", text):
        errors.append(f"{name}: copies key material into the image")
if errors:
    sys.exit("deploy/docker problems:\n  - " + "\n  - ".join(errors))
print(f"deploy/docker: {len(IMAGES)} Dockerfiles: multi-stage, distroless/busybox runtime, non-root UIDs match the chart: ok")
