"""Latency of the user_may_invite decision: in-process through the module vs an HTTP hop.

Usage (in the Synapse venv with the wheel installed):
    python bench_invite.py crates/govmx-policy/tests/vectors/contact [iterations]

Measures, in one run on the shared vector policy:
  1. Engine.user_may_invite (the Rust decision through PyO3),
  2. GovmxModule.user_may_invite (the coroutine Synapse awaits: Python callback + Rust),
  3. the same decision as an HTTP hop: a keep-alive HTTP/1.1 JSON POST on loopback to a
     Python http.server that answers with the same engine (the shape of
     synapse-http-antispam: one POST per callback, 2xx = allow).
Prints median and p99 per call in microseconds.
"""

import http.client
import http.server
import json
import socket
import statistics
import sys
import tempfile
import threading
import time

from govmx_synapse import GovmxModule
from govmx_synapse._native import Engine

NOW = 1796083200.0  # 2026-12-01T00:00:00Z, the vectors' `now`
OFFICIAL = "@amt:amt.example.de"
ERIKA = "@erika:buerger.example.de"


class FakeApi:
    server_name = "amt.example.de"

    def register_spam_checker_callbacks(self, **kwargs):
        self.callbacks = kwargs

    def looping_background_call(self, *args, **kwargs):
        pass

    def register_web_resource(self, *args, **kwargs):
        pass


def run_coroutine(coro):
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("callback awaited something")


def measure(label, fn, iterations):
    for _ in range(min(1000, iterations)):
        fn()
    samples = []
    batch = 100
    for _ in range(iterations // batch):
        start = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - start) / batch / 1000)
    samples.sort()
    median = statistics.median(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"{label:<58} median {median:8.2f} µs   p99 {p99:8.2f} µs   ({iterations} calls)", flush=True)
    return median


def main():
    vectors = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    config = {"server_name": "amt.example.de", "policy_dir": f"{vectors}/policy"}
    engine = Engine(json.dumps(config))
    engine.poll(NOW)
    module = GovmxModule(dict(config), FakeApi())

    assert engine.user_may_invite(OFFICIAL, ERIKA, True) is None
    assert engine.user_may_invite(ERIKA, OFFICIAL, False) is not None

    rust = measure(
        "Engine.user_may_invite (allow, Rust via PyO3)",
        lambda: engine.user_may_invite(OFFICIAL, ERIKA, True),
        iterations,
    )
    measure(
        "Engine.user_may_invite (deny with reason)",
        lambda: engine.user_may_invite(ERIKA, OFFICIAL, False),
        iterations,
    )
    callback = measure(
        "GovmxModule.user_may_invite coroutine (what Synapse awaits)",
        lambda: run_coroutine(module.user_may_invite(OFFICIAL, ERIKA, "!room")),
        iterations,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = engine.user_may_invite(body["inviter"], body["invitee"], True)
            payload = b"{}" if answer is None else json.dumps({"errcode": answer[0], "error": answer[1]}).encode()
            self.send_response(200 if answer is None else 403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = json.dumps({"inviter": OFFICIAL, "invitee": ERIKA, "room_id": "!room"}).encode()

    def hop():
        connection.request("POST", "/user_may_invite", body=request, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200

    http_hop = measure("HTTP hop (keep-alive POST on loopback, same engine)", hop, max(2000, iterations // 20))
    connection.close()
    server.shutdown()
    print(f"in-process callback is {http_hop / callback:.0f}x faster than the HTTP hop "
          f"(Rust decision alone {http_hop / rust:.0f}x)")


if __name__ == "__main__":
    main()
