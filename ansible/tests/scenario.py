#!/usr/bin/env python3
"""End-to-end checks against the network the playbook brought up (stdlib only).

1. Federation: register @amt-1 on the agency homeserver and @erika on the citizen homeserver
   with the registration shared secret, the agency official creates a room and invites erika
   over federation (through both federation gates), erika joins, the official's message
   arrives in erika's /sync on the citizen server.
2. Media: an EICAR upload through the citizen's media scanner is refused (403), a clean one
   is stored (200 + content URI), and the EICAR upload is not in Synapse.

usage: scenario.py <dev-secrets.yml>   (reads vault_govmx_hosts.<host>.registration_shared_secret)
"""
import hashlib
import hmac
import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

AGENCY = {"name": "agency", "server": "127.0.0.2:8448", "client": "http://127.0.0.2:8008",
          "admin": "http://127.0.0.2:18008"}
CITIZEN = {"name": "citizen", "server": "127.0.0.3:8448", "client": "http://127.0.0.3:8008",
           "admin": "http://127.0.0.3:18008"}
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method, url, body=None, token=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with NO_PROXY.open(req, timeout=60) as resp:
            payload = resp.read()
            try:
                return resp.status, json.loads(payload or b"{}")
            except ValueError:
                return resp.status, {"bytes": len(payload)}
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, {"raw": text.decode(errors="replace")}


def ok(what, status, body, expect=200):
    if status != expect:
        sys.exit(f"FAIL {what}: HTTP {status} {body}")
    print(f"ok   {what}")
    return body


def register(hs, secret, user):
    url = f"{hs['admin']}/_synapse/admin/v1/register"
    _, nonce = call("GET", url)
    password = secrets.token_hex(12)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce["nonce"].encode(), user.encode(), password.encode(), b"notadmin"]))
    status, body = call("POST", url, {"nonce": nonce["nonce"], "username": user, "password": password,
                                      "admin": False, "mac": mac.hexdigest()})
    return ok(f"register @{user}:{hs['server']} (shared secret)", status, body)


def api(hs, path):
    return f"{hs['client']}/_matrix/client/v3/{path}"


def sync_until(hs, token, predicate, what, deadline=60):
    since = None
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        query = {"timeout": "2000"} | ({"since": since} if since else {})
        status, body = call("GET", api(hs, "sync") + "?" + urllib.parse.urlencode(query), token=token)
        if status == 200:
            if predicate(body):
                print(f"ok   {what}")
                return
            since = body.get("next_batch")
    sys.exit(f"FAIL {what}: not seen within {deadline} s")


def main():
    secrets_file = sys.argv[1]
    # The dev secrets file is YAML written by run.sh in a JSON-compatible subset.
    with open(secrets_file, encoding="utf-8") as handle:
        vault = json.load(handle)
    hosts = vault["vault_govmx_hosts"]
    suffix = secrets.token_hex(3)
    official = register(AGENCY, hosts["agency"]["registration_shared_secret"], f"amt-{suffix}")
    citizen = register(CITIZEN, hosts["citizen"]["registration_shared_secret"], f"erika-{suffix}")

    status, room = call("POST", api(AGENCY, "createRoom"),
                        {"preset": "private_chat", "name": "ansible staging"}, official["access_token"])
    room_id = ok("official creates a room on the agency server", status, room)["room_id"]
    status, body = call("POST", api(AGENCY, f"rooms/{urllib.parse.quote(room_id)}/invite"),
                        {"user_id": citizen["user_id"]}, official["access_token"])
    ok("invite the citizen over federation (agency gate -> citizen gate)", status, body)
    sync_until(CITIZEN, citizen["access_token"],
               lambda b: room_id in b.get("rooms", {}).get("invite", {}), "invite arrives on the citizen server")
    join = api(CITIZEN, f"join/{urllib.parse.quote(room_id)}") + "?server_name=" + urllib.parse.quote(AGENCY["server"])
    status, body = call("POST", join, {}, citizen["access_token"])
    ok("citizen joins over federation", status, body)
    txn = secrets.token_hex(8)
    status, sent = call("PUT", api(AGENCY, f"rooms/{urllib.parse.quote(room_id)}/send/m.room.message/{txn}"),
                        {"msgtype": "m.text", "body": "Ihr Bescheid liegt vor."}, official["access_token"])
    event_id = ok("official sends a message", status, sent)["event_id"]

    def has_event(body):
        timeline = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
        return any(e.get("event_id") == event_id for e in timeline.get("events", []))

    sync_until(CITIZEN, citizen["access_token"], has_event, "message arrives on the citizen server across federation")

    upload = CITIZEN["client"] + "/_matrix/media/v3/upload?filename="
    status, body = call("POST", upload + "eicar.txt", raw=EICAR, token=citizen["access_token"],
                        content_type="text/plain")
    ok("EICAR upload through the media scanner is refused", status, body, expect=403)
    status, body = call("POST", upload + "hello.txt", raw=b"hello from the staging network\n",
                        token=citizen["access_token"], content_type="text/plain")
    content_uri = ok("clean upload through the media scanner is stored", status, body)["content_uri"]
    media = content_uri.removeprefix("mxc://")
    status, _ = call("GET", f"{CITIZEN['client']}/_matrix/client/v1/media/download/{media}",
                     token=citizen["access_token"])
    ok("clean upload can be downloaded", status, _)
    print("scenario: all checks passed")


if __name__ == "__main__":
    main()
