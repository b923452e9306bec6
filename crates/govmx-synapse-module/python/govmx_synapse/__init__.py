"""govmx Synapse module: contact rules, case grants and remote-media scans.

Synapse loads it from ``homeserver.yaml``::

    modules:
      - module: govmx_synapse.GovmxModule
        config:
          policy_dir: /etc/govmx/policy          # plain files, or a signed bundle
          trust_file: /etc/govmx/trust.yaml      # optional: require the bundle signatures
          last_known_good_dir: /var/lib/govmx/lkg
          grants_file: /var/lib/govmx/grants.json
          scanner: {url: "http://127.0.0.1:8090", token_file: /etc/govmx/scan.token}

Every decision is taken in Rust (``govmx_synapse._native``) by the same ``govmx-policy``
engine as the federation gate; this file only adapts Synapse's callback signatures, runs the
reload poll and serves the grants API. See docs/synapse-module.md.
"""

import json
import logging
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import unquote

from io import BytesIO

from prometheus_client import Counter
from twisted.web.http_headers import Headers

from synapse.api.errors import Codes
from synapse.http.client import read_body_with_max_size
from synapse.logging.context import make_deferred_yieldable
from synapse.http.server import DirectServeJsonResource
from synapse.module_api import NOT_SPAM, ModuleApi

from ._native import Engine

__all__ = ["GovmxModule", "Engine"]

logger = logging.getLogger(__name__)

GRANTS_PATH = "/_govmx/grants"
MAX_SCAN_ANSWER = 64 * 1024

Refusal = Tuple[Codes, Dict[str, Any]]

# Served by Synapse's metrics listener (prometheus_client's default registry) where enabled.
DROPPED_EVENTS = Counter(
    "govmx_module_federated_events_dropped_total",
    "Federated events dropped on arrival because their author's server is not allowed "
    "(should_drop_federated_event), by govmx rule",
    ["rule"],
)


def _answer(refusal: Optional[Tuple[str, str, str]]) -> Union[str, Refusal]:
    """Maps the engine's ``None | (errcode, reason, rule)`` to Synapse's callback result.

    The ``error`` field overrides Synapse's generic message, so the user reads the reason.
    """
    if refusal is None:
        return NOT_SPAM
    errcode, reason, rule = refusal
    return Codes(errcode), {"error": reason, "govmx_rule": rule}


class GovmxModule:
    """The module class named in ``modules:``."""

    def __init__(self, config: Dict[str, Any], api: ModuleApi):
        self._api = api
        config = dict(config or {})
        config.setdefault("server_name", api.server_name)
        self._engine = Engine(json.dumps(config))
        self._log_poll(*self._engine.poll())
        self._scanner = self._engine.scanner()
        api.register_spam_checker_callbacks(
            user_may_invite=self.user_may_invite,
            federated_user_may_invite=self.federated_user_may_invite,
            user_may_join_room=self.user_may_join_room,
            user_may_create_room=self.user_may_create_room,
            check_media_file_for_spam=self.check_media_file_for_spam,
            should_drop_federated_event=self.should_drop_federated_event,
        )
        api.looping_background_call(
            self._poll, self._engine.reload_interval_ms(), desc="govmx_policy_poll"
        )
        api.register_web_resource(GRANTS_PATH, GrantsResource(api, self._engine))

    @staticmethod
    def parse_config(config: Dict[str, Any]) -> Dict[str, Any]:
        if not isinstance(config, dict):
            raise ValueError("govmx module config must be a mapping")
        return config

    @property
    def engine(self) -> Engine:
        return self._engine

    async def _poll(self) -> None:
        # File reads and hashing happen off the reactor (the engine releases the GIL).
        refused, messages = await self._api.defer_to_thread(self._engine.poll)
        self._log_poll(refused, messages)

    def _log_poll(self, refused: bool, messages: list) -> None:
        for message in messages:
            if refused:
                logger.warning("govmx %s", message)
            else:
                logger.info("govmx %s", message)
        if messages:
            logger.info("govmx %s", self._engine.status())

    async def user_may_invite(self, inviter: str, invitee: str, room_id: str):
        answer = self._engine.user_may_invite(inviter, invitee, True)
        if answer is not None:
            logger.info("govmx refused invite %s -> %s in %s: [%s] %s", inviter, invitee, room_id, answer[2], answer[1])
        return _answer(answer)

    async def federated_user_may_invite(self, event: Any):
        answer = self._engine.user_may_invite(event.sender, event.state_key or "", False)
        if answer is not None:
            logger.info("govmx refused federated invite %s -> %s: [%s] %s", event.sender, event.state_key, answer[2], answer[1])
        return _answer(answer)

    async def should_drop_federated_event(self, event: Any) -> bool:
        """Drops PDUs whose author's server is not on the federation list, whichever listed
        server relayed them (the gate reports them; Synapse drops them here, after checking
        their signatures and before staging them)."""
        answer = self._engine.federated_event_allowed(event.sender)
        if answer is None:
            return False
        logger.warning(
            "govmx dropped federated event %s from %s in %s: [%s] %s",
            event.event_id,
            event.sender,
            event.room_id,
            answer[2],
            answer[1],
        )
        DROPPED_EVENTS.labels(rule=answer[2]).inc()
        return True

    async def user_may_join_room(self, user: str, room_id: str, is_invited: bool):
        return _answer(self._engine.user_may_join_room(user, is_invited))

    async def user_may_create_room(self, user_id: str, room_config: Dict[str, Any]):
        invitees = room_config.get("invite") or []
        if not isinstance(invitees, list):
            invitees = []
        answer = self._engine.user_may_create_room(user_id, [str(i) for i in invitees])
        if answer is not None:
            logger.info("govmx refused createRoom by %s inviting %s: [%s] %s", user_id, invitees, answer[2], answer[1])
        return _answer(answer)

    async def check_media_file_for_spam(self, file_wrapper: Any, file_info: Any):
        is_remote = getattr(file_info, "server_name", None) is not None
        if not self._engine.media_scan_needed(is_remote) or self._scanner is None:
            return NOT_SPAM
        url, token = self._scanner
        chunks = []
        await file_wrapper.write_chunks_to(chunks.append)
        body = b"".join(chunks)
        headers = Headers({b"Content-Type": [b"application/octet-stream"]})
        if token:
            headers.addRawHeader(b"Authorization", b"Bearer " + token.encode("ascii"))
        try:
            response = await self._api.http_client.request(
                "POST", url, data=body, headers=headers
            )
            payload = BytesIO()
            await make_deferred_yieldable(
                read_body_with_max_size(response, payload, MAX_SCAN_ANSWER)
            )
            answer = self._engine.media_verdict(response.code, payload.getvalue())
        except Exception as error:  # scanner unreachable, timeout, broken answer
            answer = self._engine.scanner_unavailable(type(error).__name__)
        if answer is not None:
            logger.warning(
                "govmx refused media %s from %s: [%s] %s",
                getattr(file_info, "file_id", "?"),
                getattr(file_info, "server_name", None) or "local",
                answer[2],
                answer[1],
            )
        return _answer(answer)


class GrantsResource(DirectServeJsonResource):
    """``/_govmx/grants``: officials issue, list and revoke their agency's case grants."""

    # Leaf: ``/_govmx/grants/{id}`` is served here too (the id is taken from the path).
    isLeaf = True

    def __init__(self, api: ModuleApi, engine: Engine):
        super().__init__()
        self._api = api
        self._engine = engine

    async def _handle(self, request: Any, method: str):
        requester = await self._api.get_user_by_req(request)
        path = request.path.decode("utf-8", "replace")
        grant_id = None
        if path.rstrip("/") != GRANTS_PATH:
            if not path.startswith(GRANTS_PATH + "/"):
                return 404, {"errcode": "M_UNRECOGNIZED", "error": "unknown path"}
            grant_id = unquote(path[len(GRANTS_PATH) + 1 :])
        body = request.content.read() if request.content is not None else b""
        # The grants file is written off the reactor.
        status, text = await self._api.defer_to_thread(
            self._engine.grants_api, method, requester.user.to_string(), grant_id, body
        )
        logger.info("govmx grants %s %s by %s: %s", method, grant_id or "", requester.user, status)
        return status, json.loads(text)

    async def _async_render_GET(self, request: Any):
        return await self._handle(request, "GET")

    async def _async_render_POST(self, request: Any):
        return await self._handle(request, "POST")

    async def _async_render_DELETE(self, request: Any):
        return await self._handle(request, "DELETE")
