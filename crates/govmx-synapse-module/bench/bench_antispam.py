"""user_may_invite in-process (govmx module) vs synapse-http-antispam -> HTTP endpoint on loopback.

Usage (a venv with matrix-synapse 1.163.2, synapse-http-antispam 0.5.1 and the govmx wheel):
    python bench_antispam.py crates/govmx-policy/tests/vectors/contact [iterations]

One process, one run, one Twisted reactor (the default epoll reactor, as Synapse runs it):
  a) govmx_synapse.GovmxModule registered through a fake ModuleApi into Synapse's real
     SpamCheckerModuleApiCallbacks; we await the dispatcher's user_may_invite (what Synapse's
     room member handler awaits: Measure + delay_cancellation + result normalisation) and, for
     reference, the bare module callback.
  b) synapse_http_antispam.HTTPAntispam (unmodified, from PyPI) registered the same way, with
     api.http_client = Synapse's real SimpleHttpClient (treq + HTTPConnectionPool + ProxyAgent,
     keep-alive) built from a minimal HomeServer stub. It POSTs JSON to a loopback endpoint: a
     Twisted web server in a child process (this script with --serve) that answers with the
     decision of the same govmx engine (200 {} = allow; 403 {"errcode", "error", "govmx_rule"}).
Both paths are checked to give the same answer (allow and deny) before timing.
Each call is timed individually (perf_counter_ns) in ROUNDS interleaved rounds; median and p99
per call are printed, and the TCP connections the endpoint saw (1 = keep-alive held).
"""

import json
import os
import statistics
import subprocess
import sys
import time

OFFICIAL = "@amt:amt.example.de"
ERIKA = "@erika:buerger.example.de"
ROOM = "!bench:amt.example.de"
SERVER_NAME = "amt.example.de"
ROUNDS = 10


def engine_config(vectors):
    return {"server_name": SERVER_NAME, "policy_dir": f"{vectors}/policy"}


# --------------------------------------------------------------------------- endpoint (child)


def serve(vectors):
    """The HTTP endpoint synapse-http-antispam calls, answering from the govmx engine."""
    from govmx_synapse._native import Engine
    from twisted.internet import reactor
    from twisted.web import resource, server

    engine = Engine(json.dumps(engine_config(vectors)))
    engine.poll()

    client_ports = set()

    class Connections(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            return json.dumps({"connections": len(client_ports)}).encode()

    class UserMayInvite(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            client_ports.add(request.getClientAddress().port)
            body = json.loads(request.content.read())
            answer = engine.user_may_invite(body["inviter"], body["invitee"], True)
            request.setHeader(b"Content-Type", b"application/json")
            if answer is None:
                return b"{}"
            request.setResponseCode(403)
            errcode, reason, rule = answer
            return json.dumps({"errcode": errcode, "error": reason, "govmx_rule": rule}).encode()

    root = resource.Resource()
    root.putChild(b"user_may_invite", UserMayInvite())
    root.putChild(b"connections", Connections())
    site = server.Site(root)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


# --------------------------------------------------------------------------- stubs (parent)


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class StubHomeServer:
    """Just what SimpleHttpClient and SpamCheckerModuleApiCallbacks read from a HomeServer."""

    def __init__(self, reactor):
        from synapse.util.clock import Clock

        self.hostname = SERVER_NAME
        self.version_string = "Synapse/1.163.2"
        self._reactor = reactor
        self._clock = Clock(reactor, server_name=SERVER_NAME)
        self.config = _Obj(
            server=_Obj(user_agent_suffix=None, proxy_config=None),
            caches=_Obj(global_factor=0.5),
            tls=_Obj(use_insecure_ssl_client_just_for_testing_do_not_use=False),
        )

    def get_reactor(self):
        return self._reactor

    def get_clock(self):
        return self._clock

    def get_http_client_context_factory(self):
        from synapse.crypto.context_factory import RegularPolicyForHTTPS

        return RegularPolicyForHTTPS()


class StubModuleApi:
    """ModuleApi surface used by the two modules; callbacks go to Synapse's real dispatcher."""

    def __init__(self, hs, http_client=None):
        from synapse.module_api.callbacks.spamchecker_callbacks import SpamCheckerModuleApiCallbacks

        self.server_name = hs.hostname
        self.spam_checker = SpamCheckerModuleApiCallbacks(hs)
        self.http_client = http_client
        self.callbacks = {}

    def register_spam_checker_callbacks(self, **kwargs):
        self.callbacks.update(kwargs)
        self.spam_checker.register_callbacks(**kwargs)

    def looping_background_call(self, *args, **kwargs):
        pass  # policy reload not exercised here

    def register_web_resource(self, *args, **kwargs):
        pass


# --------------------------------------------------------------------------- timing


def summary(samples_ns):
    samples = sorted(s / 1000 for s in samples_ns)
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]


async def sample(call, iterations, samples):
    clock = time.perf_counter_ns
    for _ in range(iterations):
        start = clock()
        await call()
        samples.append(clock() - start)


def report(label, samples):
    median, p99 = summary(samples)
    print(f"{label:<66} median {median:9.2f} µs   p99 {p99:9.2f} µs   ({len(samples)} calls)", flush=True)
    return median, p99


def normalise(res):
    """Compare answers: NOT_SPAM, or (errcode, error text)."""
    if isinstance(res, tuple):
        return (str(res[0].value if hasattr(res[0], "value") else res[0]), res[1].get("error"))
    return res


async def bench(reactor, vectors, port, iterations):
    from govmx_synapse import GovmxModule
    from synapse.http.client import SimpleHttpClient
    from synapse.logging.context import LoggingContext
    from synapse_http_antispam import HTTPAntispam

    hs = StubHomeServer(reactor)
    gov_api = StubModuleApi(hs)
    GovmxModule(engine_config(vectors), gov_api)
    http_api = StubModuleApi(hs, http_client=SimpleHttpClient(hs))
    HTTPAntispam(
        {"base_url": f"http://127.0.0.1:{port}", "enabled_callbacks": ["user_may_invite"]}, http_api
    )

    with LoggingContext(name="bench", server_name=SERVER_NAME):
        gov, http = gov_api.spam_checker, http_api.spam_checker
        # Same answers through both paths, allow and deny.
        for inviter, invitee in ((OFFICIAL, ERIKA), (ERIKA, OFFICIAL)):
            a = normalise(await gov.user_may_invite(inviter, invitee, ROOM))
            b = normalise(await http.user_may_invite(inviter, invitee, ROOM))
            assert a == b, (inviter, invitee, a, b)
            print(f"decision {inviter} -> {invitee}: {a if a == 'NOT_SPAM' else a[0]} (both paths)")

        n_http = max(2000, iterations // 20)
        cases = [
            # key, label, call, calls in total
            ("gov_cb", "govmx GovmxModule.user_may_invite callback, allow",
             lambda: gov_api.callbacks["user_may_invite"](OFFICIAL, ERIKA, ROOM), iterations),
            ("gov", "govmx via Synapse spam-checker dispatcher, allow",
             lambda: gov.user_may_invite(OFFICIAL, ERIKA, ROOM), iterations),
            ("gov_deny", "govmx via Synapse spam-checker dispatcher, deny",
             lambda: gov.user_may_invite(ERIKA, OFFICIAL, ROOM), iterations),
            ("http_cb", "synapse-http-antispam callback -> loopback HTTP, allow",
             lambda: http_api.callbacks["user_may_invite"](OFFICIAL, ERIKA, ROOM), n_http),
            ("http", "synapse-http-antispam via dispatcher -> loopback HTTP, allow",
             lambda: http.user_may_invite(OFFICIAL, ERIKA, ROOM), n_http),
            ("http_deny", "synapse-http-antispam via dispatcher -> loopback HTTP, deny (403)",
             lambda: http.user_may_invite(ERIKA, OFFICIAL, ROOM), n_http),
        ]
        # Warm-up, then ROUNDS interleaved rounds so load drift on a shared machine hits
        # every case alike.
        for _, _, call, total in cases:
            for _ in range(min(2000, total // 10)):
                await call()
        samples = {key: [] for key, *_ in cases}
        for _ in range(ROUNDS):
            for key, _, call, total in cases:
                await sample(call, total // ROUNDS, samples[key])
        results = {key: report(label, samples[key]) for key, label, *_ in cases}
        used = await http_api.http_client.get_json(f"http://127.0.0.1:{port}/connections")
        print(f"TCP connections the endpoint saw from SimpleHttpClient: {used['connections']} (keep-alive pool)")

    g, h = results["gov"], results["http"]
    print(f"ratio (dispatcher, allow): median {h[0] / g[0]:.0f}x, p99 {h[1] / g[1]:.0f}x; "
          f"deny median {results['http_deny'][0] / results['gov_deny'][0]:.0f}x; "
          f"bare callbacks median {results['http_cb'][0] / results['gov_cb'][0]:.0f}x")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
        return
    vectors = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000

    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", vectors],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        from twisted.internet import defer, reactor

        print(f"reactor {type(reactor).__module__}.{type(reactor).__name__}; endpoint pid {child.pid}, "
              f"port {port}; python {sys.version.split()[0]}")
        failure = []

        def run():
            d = defer.ensureDeferred(bench(reactor, vectors, port, iterations))
            d.addErrback(lambda f: failure.append(f))
            d.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(run)
        reactor.run()
        if failure:
            sys.__stdout__.write(failure[0].getTraceback())
            sys.exit(1)
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    main()
