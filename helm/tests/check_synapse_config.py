#!/usr/bin/env python3
"""Loads the rendered homeserver.yaml with the pinned Synapse's own config parser.

usage: SYNAPSE_PYTHON check_synapse_config.py RENDERED.yaml

Takes Synapse's ConfigMap (homeserver.yaml, log.yaml), runs the render-db-config init container's
script (with a test password) to produce database.yaml, adds a test secrets.yaml, moves every
in-pod path (/etc/synapse, /run/synapse, /data) below a temporary root with test files, and calls
synapse.config.homeserver.HomeServerConfig.load_config with the same --config-path arguments as
the container. Any config error fails.
"""
import os
import subprocess
import sys
import tempfile

import yaml
from signedjson.key import generate_signing_key, write_signing_keys
from synapse.config.homeserver import HomeServerConfig

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
comp = lambda d: d["metadata"].get("labels", {}).get("app.kubernetes.io/component")
cm = next(d for d in docs if d["kind"] == "ConfigMap" and comp(d) == "synapse")
deploy = next(d for d in docs if d["kind"] == "Deployment" and comp(d) == "synapse")
pod = deploy["spec"]["template"]["spec"]
root = tempfile.mkdtemp(prefix="synapse-config-")
remap = lambda p: root + p if isinstance(p, str) and p.startswith(("/etc/synapse", "/run/synapse", "/data")) else p

for d in ("/etc/synapse/secrets", "/etc/synapse/keys", "/etc/synapse/postgresql", "/run/synapse", "/data/media", "/etc/synapse/federation-ca"):
    os.makedirs(remap(d), exist_ok=True)
hs = yaml.safe_load(cm["data"]["homeserver.yaml"])
for key in ("log_config", "media_store_path", "signing_key_path"):
    hs[key] = remap(hs[key])
if "federation_custom_ca_list" in hs:
    hs["federation_custom_ca_list"] = [remap(p) for p in hs["federation_custom_ca_list"]]
    for p in hs["federation_custom_ca_list"]:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", "/dev/null", "-out", p, "-subj", "/CN=test-ca", "-days", "1"],
                       check=True, capture_output=True)
open(remap("/etc/synapse/homeserver.yaml"), "w").write(yaml.safe_dump(hs))
open(remap("/etc/synapse/log.yaml"), "w").write(cm["data"]["log.yaml"])
with open(remap("/etc/synapse/keys/signing.key"), "w") as f:
    write_signing_keys(f, [generate_signing_key("a")])
open(remap("/etc/synapse/secrets/secrets.yaml"), "w").write(
    "registration_shared_secret: test-registration\nmacaroon_secret_key: test-macaroon\nform_secret: test-form\n")
open(remap("/etc/synapse/postgresql/password"), "w").write("test-password\n")

init = next(c for c in pod["initContainers"] if c["name"] == "render-db-config")
script = init["args"][0].replace("/etc/synapse/", root + "/etc/synapse/").replace("/run/synapse/", root + "/run/synapse/")
env = {**os.environ, **{e["name"]: e["value"] for e in init["env"]}}
subprocess.run([sys.executable, "-c", script], check=True, env=env)

main = next(c for c in pod["containers"] if c["name"] == "synapse")
args = [a.replace("=", "=" + root, 1) if a.startswith("--config-path=") else a for a in main["args"]]
config = HomeServerConfig.load_config("govmx-helm-check", args)
assert config.server.server_name, "no server_name"
assert config.database.databases[0].config["name"] == "psycopg2", "database is not PostgreSQL"
print(f"{sys.argv[1]}: homeserver.yaml loads with Synapse's parser (server_name {config.server.server_name})")
