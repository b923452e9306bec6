#!/usr/bin/env python3
"""Parity: the Helm chart and the Ansible roles render the same Synapse and govmx service
configuration for the same inputs (compared parsed, after explicit normalisations).

For each scenario the chart is rendered with `helm template` and the role templates with
tests/render.yml (ansible-playbook on localhost, nothing installed), the five configurations
are parsed (homeserver.yaml; federation gate, media scanner, exporter and agency CA config.yaml)
and compared after NORMALISATIONS, the complete list of what may legitimately differ:

  N1 paths         file and directory paths (the chart's container mounts vs the host layout
                   /etc/govmx/<instance>, /var/lib/govmx/<instance>, /var/log/govmx/<instance>)
                   are replaced by "<path>", at exactly the keys listed in PATH_KEYS.
  N2 bind hosts    the host part of listen addresses (LISTEN_KEYS) and Synapse's listener
                   bind_addresses: pods bind 0.0.0.0, hosts bind their own IP or loopback for
                   internal listeners. Ports are compared.
  N3 peer hosts    the host part of URLs/addresses of other components (URL_KEYS): Kubernetes
                   Service names vs IP addresses. Scheme and port are compared.
  N4 CA hosts      agency CA tls.self_issued_hosts: the chart prepends its Service names
                   (<fullname>-agency-ca, <fullname>-agency-ca.<namespace>.svc); removed.
  Inputs, not normalisations: the chart's defaults leave the govmx Synapse module off
  (synapseModule.enabled: false) and the Ansible side renders without a module wheel, so
  `modules` is absent on both sides (the module block itself is not compared yet).

usage: parity.py [--keep DIR]      (needs ~/.cache/govmx/tools/bin/helm: helm/tools/ensure-tools.sh)
"""
import copy
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ANSIBLE = HERE.parent
REPO = ANSIBLE.parent
HELM = pathlib.Path(os.environ.get("HELM", pathlib.Path.home() / ".cache/govmx/tools/bin/helm"))
ANSIBLE_PLAYBOOK = pathlib.Path(sys.executable).parent / "ansible-playbook"

CONFIGS = ["synapse", "federation-gate", "media-scanner", "exporter", "agency-ca"]

PATH_KEYS = {
    "synapse": ["log_config", "media_store_path", "signing_key_path", "federation_custom_ca_list[]"],
    "federation-gate": ["inbound.tls_cert", "inbound.tls_key", "inbound.key_fetch.ca_file", "policy.trust",
                        "policy.last_known_good_dir", "policy.dir", "policy.ca_file", "audit_log"],
    "media-scanner": ["spool.dir", "audit_log", "mcs.request_secret_file"],
    "exporter": ["synapse.access_token_file", "policy.bundle_dir", "policy.trust"],
    "agency-ca": ["ca_dir", "agencies"],
}
LISTEN_KEYS = {
    "synapse": ["listeners[].bind_addresses[]"],
    "federation-gate": ["inbound.listen", "outbound.listen", "admin.listen"],
    "media-scanner": ["listen", "admin_listen"],
    "exporter": ["admin_listen"],
    "agency-ca": ["listen", "admin_listen"],
}
URL_KEYS = {
    "synapse": ["https_proxy"],
    "federation-gate": ["inbound.upstream"],
    "media-scanner": ["upstream", "clamd.addresses[]", "mcs.homeserver_url"],
    "exporter": ["synapse.url", "clamd.address"],
    "agency-ca": [],
}

# Scenarios: chart values and the same inputs as Ansible variables.
SCENARIOS = {
    "defaults": (
        {"serverName": "gov.example", "publicHost": "matrix.gov.example"},
        {"govmx_server_name": "gov.example", "govmx_public_host": "matrix.gov.example",
         "govmx_synapse_federation_ca": False},
    ),
    "staging": (
        {"serverName": "land.example", "publicHost": "chat.land.example",
         "synapse": {"maxUploadSize": "20M", "federationCa": {"existingConfigMap": "fed-ca"},
                     "extraConfig": {"ip_range_blacklist": [], "presence": {"enabled": False}}},
         "federationGate": {"strict": True, "maxAge": "24h", "reloadInterval": "5s", "relayedEvents": "remove",
                            "workers": 2},
         "mediaScanner": {"maxUploadSize": "20MiB", "maxConcurrentScans": 4, "signaturesWarnAge": "1d",
                          "mcs": {"enabled": False}},
         "exporter": {"synapseAdminTokenSecret": "exporter-token", "interval": "15s"},
         "agencyCa": {"selfIssuedHosts": ["ca.land.example"], "crlDistributionPoint": "https://ca.land.example/crl",
                      "lifetimes": {"homeserverTls": "14d", "serviceMtls": "3d", "agencyIdentity": "2d"}}},
        {"govmx_server_name": "land.example", "govmx_public_host": "chat.land.example",
         "govmx_synapse_max_upload_size": "20M", "govmx_synapse_federation_ca": True,
         "govmx_synapse_extra_config": {"ip_range_blacklist": [], "presence": {"enabled": False}},
         "govmx_gate_strict": True, "govmx_gate_max_age": "24h", "govmx_gate_reload_interval": "5s",
         "govmx_gate_relayed_events": "remove", "govmx_gate_workers": 2,
         "govmx_media_scanner_max_upload_size": "20MiB", "govmx_media_scanner_max_concurrent_scans": 4,
         "govmx_media_scanner_signatures_warn_age": "1d", "govmx_media_scanner_mcs_enabled": False,
         "govmx_exporter_synapse_admin_token": "not-a-real-token", "govmx_exporter_interval": "15s",
         "govmx_agency_ca_self_issued_hosts": ["ca.land.example"],
         "govmx_agency_ca_crl_distribution_point": "https://ca.land.example/crl",
         "govmx_agency_ca_lifetimes": {"homeserver_tls": "14d", "service_mtls": "3d", "agency_identity": "2d"}},
    ),
    "bundle-url": (
        {"serverName": "gov.example", "publicHost": "matrix.gov.example",
         "policy": {"bundle": {"url": "https://policy.gov.example/bundle", "caConfigMap": "policy-ca"}}},
        {"govmx_server_name": "gov.example", "govmx_public_host": "matrix.gov.example",
         "govmx_synapse_federation_ca": False, "govmx_policy_bundle_url": "https://policy.gov.example/bundle",
         "govmx_policy_bundle_url_ca_file": "/etc/govmx/hs/policy-ca/ca.pem"},
    ),
}


def walk(doc, dotted, fn):
    """Apply fn to the value(s) at a dotted key path; `[]` steps into every list element."""
    head, _, rest = dotted.partition(".")
    is_list = head.endswith("[]")
    key = head[:-2] if is_list else head
    if not isinstance(doc, dict) or key not in doc:
        return
    if is_list:
        items = doc[key]
        for i, item in enumerate(items):
            if rest:
                walk(item, rest, fn)
            else:
                items[i] = fn(item)
    elif rest:
        walk(doc[key], rest, fn)
    else:
        doc[key] = fn(doc[key])


def host_of_listen(value):
    return re.sub(r"^.*(:\d+)$", r"<host>\1", str(value)) if re.search(r":\d+$", str(value)) else "<host>"


def host_of_url(value):
    m = re.match(r"^(\w+://)?[^/:]+(:\d+)?(.*)$", str(value))
    return f"{m.group(1) or ''}<host>{m.group(2) or ''}{m.group(3)}" if m else value


def normalise(name, doc, side, notes):
    doc = copy.deepcopy(doc)
    for key in PATH_KEYS[name]:
        walk(doc, key, lambda _v: "<path>")
    for key in LISTEN_KEYS[name]:
        walk(doc, key, host_of_listen)
    for key in URL_KEYS[name]:
        walk(doc, key, host_of_url)
    if name == "agency-ca" and side == "helm":                      # N4
        hosts = doc.get("tls", {}).get("self_issued_hosts", [])
        doc["tls"]["self_issued_hosts"] = [h for h in hosts if not re.match(r"^\S+-agency-ca(\.\S+\.svc)?$", h)]
    return doc


def render_helm(values, out):
    values_file = out / "values.json"
    values_file.write_text(json.dumps(values))
    text = subprocess.run([str(HELM), "template", "govmx", str(REPO / "helm/govmx"), "--namespace", "govmx",
                           "-f", str(values_file)], check=True, capture_output=True, text=True).stdout
    found = {}
    for doc in yaml.safe_load_all(text):
        if not doc or doc.get("kind") != "ConfigMap":
            continue
        name, data = doc["metadata"]["name"], doc.get("data", {})
        if "homeserver.yaml" in data:
            found["synapse"] = yaml.safe_load(data["homeserver.yaml"])
        for c in CONFIGS[1:]:
            if name.endswith(c) and "config.yaml" in data:
                found[c] = yaml.safe_load(data["config.yaml"])
    return found


def render_ansible(inputs, out):
    extra = {"render_out": str(out), "govmx_instance": "hs", "govmx_synapse_module_wheel": "",
             "govmx_agency_ca_dir": "/var/lib/govmx/hs/agency-ca"} | inputs
    (out / "inputs.json").write_text(json.dumps(extra))
    env = os.environ | {"ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    subprocess.run([str(ANSIBLE_PLAYBOOK), "tests/render.yml", "-e", f"@{out / 'inputs.json'}"],
                   cwd=ANSIBLE, check=True, capture_output=True, text=True, env=env)
    files = {"synapse": "homeserver.yaml", "federation-gate": "federation-gate.yaml",
             "media-scanner": "media-scanner.yaml", "exporter": "exporter.yaml", "agency-ca": "agency-ca.yaml"}
    return {name: yaml.safe_load((out / f).read_text()) for name, f in files.items()}


def diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                yield f"{path}{key}: only in ansible = {b[key]!r}"
            elif key not in b:
                yield f"{path}{key}: only in helm = {a[key]!r}"
            else:
                yield from diff(a[key], b[key], f"{path}{key}.")
    elif a != b:
        yield f"{path.rstrip('.')}: helm {a!r} != ansible {b!r}"


def main():
    keep = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--keep" else None
    failures = 0
    for scenario, (values, inputs) in SCENARIOS.items():
        with tempfile.TemporaryDirectory() as tmp:
            base = pathlib.Path(keep) / scenario if keep else pathlib.Path(tmp)
            (base / "helm").mkdir(parents=True, exist_ok=True)
            (base / "ansible").mkdir(parents=True, exist_ok=True)
            helm = render_helm(values, base / "helm")
            ansible = render_ansible(inputs, base / "ansible")
            for name in CONFIGS:
                notes = []
                if name not in helm:
                    print(f"ok   {scenario}/{name}: not rendered by the chart (disabled), skipped")
                    continue
                h = normalise(name, helm[name], "helm", notes)
                a = normalise(name, ansible[name], "ansible", notes)
                problems = list(diff(h, a))
                for note in notes:
                    print(f"note {scenario}/{name}: {note}")
                if problems:
                    failures += 1
                    print(f"FAIL {scenario}/{name}:")
                    for p in problems:
                        print(f"       {p}")
                else:
                    print(f"ok   {scenario}/{name}: equivalent ({len(json.dumps(h))} bytes normalised)")
        if scenario == "defaults":
            # The comparison is not vacuous: one changed value in each config must be reported.
            for name in CONFIGS:
                mutated = normalise(name, ansible[name], "ansible", [])
                key = sorted(k for k in mutated if not isinstance(mutated[k], (dict, list)))[0]
                mutated[key] = "<mutated>"
                if not list(diff(normalise(name, helm[name], "helm", []), mutated)):
                    failures += 1
                    print(f"FAIL self-test {name}: a changed {key} went unnoticed")
            print("ok   self-test: a mutated value in each configuration is reported")
    if failures:
        sys.exit(f"parity: {failures} configuration(s) differ")
    print("parity: helm and ansible render equivalent configurations")


if __name__ == "__main__":
    main()
