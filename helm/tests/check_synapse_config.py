#!/usr/bin/env python3
"""Loads every rendered Synapse process config with the pinned Synapse's own config parser.

usage: SYNAPSE_PYTHON check_synapse_config.py RENDERED.yaml

For the main Deployment (component synapse) and every worker Deployment (component synapse-*):
writes the files the container mounts from Synapse's ConfigMap (homeserver.yaml, log.yaml,
worker-*.yaml, modules.yaml), runs the render-db-config init container's script (with a test
password) to produce database.yaml, adds a test secrets.yaml, moves every in-pod path below a
temporary root with test files, and calls HomeServerConfig.load_config with the container's
--config-path arguments. Any config error fails. Workers must replicate from main (instance_map,
Redis) and the federation sender must be the only process sending federation.

When the govmx Synapse module is configured, the container's PYTHONPATH must be the volume the
install-govmx-module init container fills, and the module config keys must be ones the module knows
(docs/synapse-module.md). If the module is not installed in this venv (it is a PyO3 build), a stub
with the same import path stands in for the import Synapse's parser performs.
"""
import os
import subprocess
import sys
import tempfile
import types

import yaml
from signedjson.key import generate_signing_key, write_signing_keys
from synapse.config.homeserver import HomeServerConfig

MODULE_KEYS = {"policy_dir", "trust_file", "last_known_good_dir", "grants_file", "reload_interval_ms",
               "defer_grants_to_remote", "max_grant_days", "scanner", "server_name"}
IN_POD = ("/etc/synapse", "/run/synapse", "/data", "/etc/govmx", "/var/lib/govmx-module")  # remapped below a temp root

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
comp = lambda d: d["metadata"].get("labels", {}).get("app.kubernetes.io/component") or ""
cm = next(d for d in docs if d["kind"] == "ConfigMap" and comp(d) == "synapse")
deployments = [d for d in docs if d["kind"] == "Deployment" and (comp(d) == "synapse" or comp(d).startswith("synapse-"))]
assert any(comp(d) == "synapse" for d in deployments), "no Synapse main Deployment"

try:
    import govmx_synapse  # noqa: F401
    stub = False
except ImportError:
    stub = True
    mod = types.ModuleType("govmx_synapse")
    class GovmxModule:  # stand-in for the import only; the real class validates at start
        @staticmethod
        def parse_config(config):
            unknown = set(config) - MODULE_KEYS
            if unknown:
                raise ValueError(f"unknown govmx module keys: {sorted(unknown)}")
            if "policy_dir" not in config:
                raise ValueError("govmx module: policy_dir is required")
            return config
    mod.GovmxModule = GovmxModule
    sys.modules["govmx_synapse"] = mod


def load(deploy):
    pod = deploy["spec"]["template"]["spec"]
    main = next(c for c in pod["containers"] if c["name"] == "synapse")
    root = tempfile.mkdtemp(prefix=f"synapse-config-{comp(deploy)}-")
    remap = lambda p: root + p if isinstance(p, str) and p.startswith(IN_POD) else p

    for d in ("/etc/synapse/secrets", "/etc/synapse/keys", "/etc/synapse/postgresql", "/run/synapse",
              "/data/media", "/etc/synapse/federation-ca", "/etc/synapse/redis", "/etc/govmx/policy",
              "/etc/govmx/trust", "/var/lib/govmx-module"):
        os.makedirs(remap(d), exist_ok=True)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in main["volumeMounts"]:
        vol = volumes[m["name"]]
        if "configMap" in vol and vol["configMap"]["name"] == cm["metadata"]["name"] and m.get("subPath"):
            text = cm["data"][m["subPath"]]
            data = yaml.safe_load(text)
            if m["subPath"] == "homeserver.yaml":
                for key in ("log_config", "media_store_path", "signing_key_path"):
                    data[key] = remap(data[key])
                if "redis" in data and "password_path" in data["redis"]:
                    data["redis"]["password_path"] = remap(data["redis"]["password_path"])
                    open(data["redis"]["password_path"], "w").write("test-redis-password\n")
                if "federation_custom_ca_list" in data:
                    data["federation_custom_ca_list"] = [remap(p) for p in data["federation_custom_ca_list"]]
                    for p in data["federation_custom_ca_list"]:
                        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                                        "-nodes", "-keyout", "/dev/null", "-out", p, "-subj", "/CN=test-ca", "-days", "1"],
                                       check=True, capture_output=True)
            elif m["subPath"].startswith("worker-"):
                data["worker_log_config"] = remap(data["worker_log_config"])
            elif m["subPath"] == "modules.yaml":
                env = {e["name"]: e.get("value") for e in main.get("env", [])}
                init = [c for c in pod["initContainers"] if c["name"] == "install-govmx-module"]
                assert init, "modules.yaml without the install-govmx-module init container"
                target = next(im["name"] for im in init[0]["volumeMounts"])
                paths = [mm["mountPath"] for mm in main["volumeMounts"] if mm["name"] == target]
                assert paths and env.get("PYTHONPATH") == paths[0], \
                    f"PYTHONPATH {env.get('PYTHONPATH')!r} is not the module volume's mount {paths}"
                for entry in data["modules"]:
                    for key in ("policy_dir", "trust_file", "last_known_good_dir", "grants_file"):
                        p = entry["config"].get(key)
                        if p:
                            mounted = [mm["mountPath"] for mm in main["volumeMounts"]
                                       if p == mm["mountPath"] or p.startswith(mm["mountPath"].rstrip("/") + "/")]
                            assert mounted, f"module {key} {p} is on no volumeMount"
                            entry["config"][key] = remap(p)
                    scanner = entry["config"].get("scanner")
                    if scanner:
                        tf = scanner["token_file"]
                        assert any(tf.startswith(mm["mountPath"].rstrip("/") + "/") for mm in main["volumeMounts"]), \
                            f"module scanner.token_file {tf} is on no volumeMount"
                        host, port = scanner["url"].removeprefix("http://").split(":")
                        svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host
                               and any(p["port"] == int(port) for p in d["spec"]["ports"])]
                        assert svc, f"module scanner.url {scanner['url']} is not a rendered Service port"
                        scanner["token_file"] = remap(tf)
                        os.makedirs(os.path.dirname(scanner["token_file"]), exist_ok=True)
                        open(scanner["token_file"], "w").write("test-token\n")
                    if entry["config"].get("trust_file"):
                        open(entry["config"]["trust_file"], "w").write("{}\n")
            target = remap(m["mountPath"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").write(yaml.safe_dump(data) if m["subPath"] != "log.yaml" else text)
    with open(remap("/etc/synapse/keys/signing.key"), "w") as f:
        write_signing_keys(f, [generate_signing_key("a")])
    open(remap("/etc/synapse/secrets/secrets.yaml"), "w").write(
        "registration_shared_secret: test-registration\nmacaroon_secret_key: test-macaroon\nform_secret: test-form\n")
    open(remap("/etc/synapse/postgresql/password"), "w").write("test-password\n")

    init = next(c for c in pod["initContainers"] if c["name"] == "render-db-config")
    script = init["args"][0].replace("/etc/synapse/", root + "/etc/synapse/").replace("/run/synapse/", root + "/run/synapse/")
    env = {**os.environ, **{e["name"]: e["value"] for e in init["env"]}}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)

    args = [a.replace("=", "=" + root, 1) if a.startswith("--config-path=") else a for a in main["args"]]
    config = HomeServerConfig.load_config("govmx-helm-check", args)
    assert config.server.server_name, "no server_name"
    assert config.database.databases[0].config["name"] == "psycopg2", "database is not PostgreSQL"
    rootcert = config.database.databases[0].config["args"].get("sslrootcert")
    if rootcert:
        in_pod = rootcert.removeprefix(root)
        assert any(in_pod.startswith(m["mountPath"].rstrip("/") + "/") for m in main["volumeMounts"]), \
            f"{comp(deploy)}: database sslrootcert {in_pod} is on no volumeMount"
    return config


configs = {comp(d): load(d) for d in deployments}
main = configs["synapse"]
workers = {c: cfg for c, cfg in configs.items() if c != "synapse"}
for c, cfg in workers.items():
    assert cfg.worker.worker_app == "synapse.app.generic_worker", f"{c}: worker_app"
    assert cfg.worker.instance_name == c.removeprefix("synapse-"), f"{c}: worker_name"
    assert "master" in cfg.worker.instance_map, f"{c}: instance_map has no main (internally \"master\")"
    assert cfg.redis.redis_enabled, f"{c}: Redis replication is off"
if workers:
    senders = [c for c, cfg in configs.items() if cfg.worker.send_federation]
    assert senders == ["synapse-federation-sender"], f"processes sending federation: {senders}"
    assert main.redis.redis_enabled and (main.worker.instance_map.get("master") or main.worker.instance_map["main"]).port == 9093
else:
    assert main.worker.send_federation, "the main process must send federation without workers"
modules = [m[0].__name__ for m in main.modules.loaded_modules]
print(f"{sys.argv[1]}: {len(configs)} Synapse config(s) load with Synapse's parser "
      f"(server_name {main.server.server_name}, workers {sorted(workers) or 'none'}, modules {modules or 'none'}"
      f"{' [module import stubbed]' if stub and modules else ''})")
