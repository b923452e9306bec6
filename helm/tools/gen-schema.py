#!/usr/bin/env python3
"""Generates helm/govmx/values.schema.json from helm/govmx/values.yaml.

Every object in values.yaml becomes a closed object (additionalProperties: false, all keys known);
types come from the defaults; OVERRIDES adds enums, patterns, bounds and the few free-form
Kubernetes fragments (selectors, peers, resources). Run after changing values.yaml; the tests fail
when the committed schema is stale:  helm/tools/gen-schema.py [--check]
"""
import json
import pathlib
import sys

import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent / "govmx"
DURATION = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h|d)$"}
SIZE = {"type": "string", "pattern": r"^[0-9]+(B|KiB|MiB|GiB)?$"}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T|m)?$"}
HOST = {"type": "string", "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
K8S_NAME = {"type": "string", "pattern": r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", "maxLength": 253}
K8S_OBJECT = {"type": "object"}  # a Kubernetes API fragment, validated by the API server
PEERS = {"type": "array", "items": {
    "type": "object", "additionalProperties": False,
    "properties": {"namespaceSelector": K8S_OBJECT, "podSelector": K8S_OBJECT, "ipBlock": {
        "type": "object", "additionalProperties": False, "required": ["cidr"],
        "properties": {"cidr": {"type": "string"}, "except": {"type": "array", "items": {"type": "string"}}}}}}}
CPU_MEM = {"type": "object", "additionalProperties": False, "required": ["cpu", "memory"],
           "properties": {"cpu": {"type": ["string", "number"]}, "memory": QUANTITY}}
RESOURCES = {"type": "object", "additionalProperties": False, "required": ["requests", "limits"],
             "properties": {"requests": CPU_MEM, "limits": CPU_MEM}}
IMAGE = {"type": "object", "additionalProperties": False,
         "required": ["registry", "repository", "tag", "digest"],
         "properties": {"registry": {"type": "string", "minLength": 1},
                        "repository": {"type": "string", "minLength": 1},
                        "tag": {"type": "string", "minLength": 1, "not": {"const": "latest"}},
                        "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}}
STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}

OVERRIDES = {
    "global.imageRegistry": {"type": "string", "pattern": r"^([a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*)?$"},
    "global.imagePullSecrets": {"type": "array", "items": K8S_NAME},
    "global.nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
    "global.tolerations": {"type": "array", "items": K8S_OBJECT},
    "serverName": HOST, "publicHost": {"anyOf": [HOST, {"const": ""}]},
    "synapse.replicas": {"type": "integer", "minimum": 0, "maximum": 1},
    "synapse.maxUploadSize": {"type": "string", "pattern": r"^[0-9]+[KMG]?$"},
    "synapse.extraConfig": {"type": "object"},
    "postgresql.external.port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "postgresql.external.sslmode": {"enum": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]},
    "redis.port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "clamav.signatures.mode": {"enum": ["freshclam", "volume"]},
    "clamav.signatures.freshclam.checksPerDay": {"type": "integer", "minimum": 1, "maximum": 50},
    "clamav.streamMaxLength": {"type": "string", "pattern": r"^[0-9]+[KM]?$"},
    "clamav.maxThreads": {"type": "integer", "minimum": 1, "maximum": 256},
    "federationGate.service.type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]},
    "federationGate.relayedEvents": {"enum": ["remove", "report"]},
    "federationGate.maxBodyBytes": {"type": "integer", "minimum": 1024},
    "federationGate.peerPorts": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1, "maximum": 65535}},
    "mediaScanner.maxUploadSize": SIZE,
    "mediaScanner.scannerUnavailable": {"enum": ["reject", "allow"]},
    "mediaScanner.mimeBlock": STRINGS,
    "mediaScanner.maxConcurrentScans": {"type": "integer", "minimum": 1},
    "mediaScanner.spool.medium": {"enum": ["", "Memory"]},
    "mediaScanner.spool.sizeLimit": QUANTITY,
    "agencyCa.selfIssuedHosts": STRINGS,
    "agencyCa.crlDistributionPoint": {"type": "string", "pattern": r"^(https?://.+)?$"},
    "ingress.annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "ingress.federationAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "ingress.federationHost": {"anyOf": [HOST, {"const": ""}]},
    "gatewayApi.parentRefs": {"type": "array", "items": K8S_OBJECT},
    "podDisruptionBudget.maxUnavailable": {"type": "integer", "minimum": 1},
    "policy.bundle.url": {"type": "string", "pattern": r"^(https://.+)?$"},
    "synapseModule.reloadIntervalMs": {"type": "integer", "minimum": 100},
    "monitoring.serviceMonitors.labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "monitoring.prometheusRule.labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "monitoring.prometheusRule.runbookUrlBase": {"type": "string", "pattern": r"^(https?://[^ ]+[^/ ])?$"},
    "monitoring.dashboards.sidecarLabel": {"type": "string", "pattern": r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$"},
    "monitoring.dashboards.namespace": K8S_NAME,
    "backup.schedule": {"type": "string", "pattern": r"^(@(hourly|daily|weekly|monthly)|(\S+\s+){4}\S+)$"},
    "backup.keep": {"type": "integer", "minimum": 1},
}
SUFFIXES = {  # by last key
    "resources": RESOURCES, "networkPolicyPeers": PEERS, "federationFrom": PEERS, "peerEgress": PEERS,
    "apiFrom": PEERS, "ingressFrom": PEERS, "monitoringFrom": PEERS, "dns": PEERS,
    "replicas": {"type": "integer", "minimum": 0}, "size": QUANTITY, "storageClass": K8S_NAME,
    "existingSecret": K8S_NAME, "existingClaim": K8S_NAME, "existingConfigMap": K8S_NAME,
}
DURATION_KEYS = {"headerReadTimeout", "upstreamTimeout", "connectTimeout", "reloadInterval",
                 "refetchOnMiss", "maxAge", "interval", "scrapeTimeout", "signaturesWarnAge", "homeserverTls",
                 "serviceMtls", "agencyIdentity"}


def schema(path, value):
    if path in OVERRIDES:
        return OVERRIDES[path]
    last = path.rsplit(".", 1)[-1]
    if path.startswith("images."):
        return IMAGE
    if last in SUFFIXES:
        return SUFFIXES[last]
    if last in DURATION_KEYS:
        return DURATION
    if isinstance(value, dict):
        return {"type": "object", "additionalProperties": False,
                "properties": {k: schema(f"{path}.{k}" if path else k, v) for k, v in value.items()}}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        raise SystemExit(f"gen-schema: list {path} needs an entry in OVERRIDES or SUFFIXES")
    raise SystemExit(f"gen-schema: no schema for {path}")


def main():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    out = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "govmx chart values",
           **schema("", values)}
    out["required"] = ["global", "serverName", "publicHost", "images", "postgresql"]
    text = json.dumps(out, indent=2, sort_keys=True) + "\n"
    target = CHART / "values.schema.json"
    if sys.argv[1:] == ["--check"]:
        if target.read_text() != text:
            raise SystemExit("values.schema.json is stale: run helm/tools/gen-schema.py")
        return
    target.write_text(text)


main()
