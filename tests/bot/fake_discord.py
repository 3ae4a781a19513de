"""A small fake Discord on 127.0.0.1 (REST + gateway websocket) that a real discord.py client logs into."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import discord
import yarl
from aiohttp import WSCloseCode, WSMsgType, web

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway-ws"
TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAx.R2F0ZQ.ZmFrZS10b2tlbi1mb3ItdGVzdHM"
APPLICATION_ID = 100000000000000001
APP_OWNER_ID = 100000000000000002
GUILD_ID = 100000000000000003
CHANNEL_ID = 100000000000000004
EPHEMERAL = 64
ADMINISTRATOR = 1 << 3
# Slow enough that discord.py's heartbeat thread stays quiet during a test; Discord's own value.
HEARTBEAT_INTERVAL_MS = 41_250
WAIT_TIMEOUT = 5.0
# Gateway close codes for "Authentication failed", "Invalid shard" and "Sharding required".
AUTH_FAILED = 4004
INVALID_SHARD = 4010
SHARDING_REQUIRED = 4011

Predicate = Callable[["Recorded"], bool]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One REST request the bot sent, as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorized: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """A message the bot sent in answer to an interaction (initial response, followup or edit)."""

    kind: str
    content: str | None
    embeds: list[dict[str, Any]]
    flags: int

    @property
    def ephemeral(self) -> bool:
        """Whether only the invoking user sees it."""
        return bool(self.flags & EPHEMERAL)

    @property
    def fields(self) -> dict[str, str]:
        """The first embed's fields, name to value."""
        if not self.embeds:
            return {}
        return {f["name"]: f["value"] for f in self.embeds[0].get("fields", [])}


@dataclass(frozen=True, slots=True)
class SentInteraction:
    """An INTERACTION_CREATE the fake pushed to the bot."""

    id: int
    token: str
    name: str
    shard: int | None = None


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    """A Discord user object."""
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def json_response(data: Any, status: int = 200) -> web.Response:
    """JSON with `Content-Type: application/json` exactly: discord.py only parses that (no charset)."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def error_response(status: int, message: str, code: int = 0) -> web.Response:
    """A Discord-shaped error body."""
    return json_response({"message": message, "code": code}, status)


def shard_for(guild_id: int, shard_count: int) -> int:
    """The shard Discord sends a guild's events to."""
    return (guild_id >> 22) % shard_count


def guild_on_shard(shard_id: int, shard_count: int, base: int = GUILD_ID) -> int:
    """A guild id, near `base`, whose events go to `shard_id`."""
    return next(g for g in itertools.count(base, 1 << 22) if shard_for(g, shard_count) == shard_id)


def subcommand_options(subcommand: str | None, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Interaction data options for `options` (string, integer or boolean), nested under `subcommand`."""
    kinds = {bool: 5, int: 4, float: 10, str: 3}
    values = [{"name": name, "type": kinds[type(value)], "value": value} for name, value in options.items()]
    if subcommand is None:
        return values
    return [{"name": subcommand, "type": 1, "options": values}]


@dataclass
class _Session:
    ws: web.WebSocketResponse
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    identified: bool = False
    shard: tuple[int, int] | None = None  # [shard_id, shard_count] from IDENTIFY; None: unsharded

    def receives(self, guild_id: int | None) -> bool:
        """Whether Discord would send this guild's events on this session."""
        if self.shard is None or guild_id is None:
            return True
        shard_id, shard_count = self.shard
        return shard_for(guild_id, shard_count) == shard_id


class FakeDiscord:
    """Enough of Discord's REST API and gateway for discord.py to log in, sync and answer interactions."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        application_id: int = APPLICATION_ID,
        app_owner_id: int = APP_OWNER_ID,
        guild_id: int = GUILD_ID,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        shard_count: int = 1,
        required_shards: int = 1,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.app_owner_id = app_owner_id
        self.guild_id = guild_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.shard_count = shard_count  # what /gateway/bot recommends
        self.required_shards = required_shards  # fewer, and IDENTIFY is refused (too many guilds)
        self.bot_user = user_payload(application_id, "Courier", bot=True)
        self.requests: list[Recorded] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.gateway_opcodes: list[int] = []
        self.gateway_closes: list[int | None] = []
        self.identified = asyncio.Event()
        self.identifies: list[tuple[int, int] | None] = []  # each IDENTIFY's shard, in order
        self._resumable: dict[str, tuple[int, int] | None] = {}
        self._sessions: list[_Session] = []
        self._ids = itertools.count(200000000000000000)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def rest_base(self) -> str:
        """What `discord.http.Route.BASE` must be."""
        return f"http://127.0.0.1:{self._port}{API_PREFIX}"

    @property
    def gateway_url(self) -> yarl.URL:
        """What `DiscordWebSocket.DEFAULT_GATEWAY` must be."""
        return yarl.URL(f"ws://127.0.0.1:{self._port}{GATEWAY_PATH}")

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        app = web.Application()
        app.router.add_get(GATEWAY_PATH, self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Close every gateway session, then the server."""
        for session in list(self._sessions):
            await session.ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this fake while inside the block."""
        old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.rest_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self.gateway_url
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # ---- what tests read and wait for

    @property
    def open_sessions(self) -> int:
        """Gateway websockets still open."""
        return sum(not s.ws.closed for s in self._sessions)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT_TIMEOUT) -> None:
        """Wait (bounded) until `condition()` holds; it is re-checked after every request or frame."""
        async with asyncio.timeout(timeout):
            while not condition():
                await self._changed.wait()

    async def wait_for_request(self, predicate: Predicate, timeout: float = WAIT_TIMEOUT) -> Recorded:
        """The first recorded request matching `predicate`, waiting for it if needed."""
        await self.wait_until(lambda: any(predicate(r) for r in self.requests), timeout)
        return next(r for r in self.requests if predicate(r))

    def requests_for(self, sent: SentInteraction) -> list[Recorded]:
        """Every request the bot made about `sent` (callback, followups, edits, deletes)."""
        return [
            r
            for r in self.requests
            if r.path.startswith(
                (f"/interactions/{sent.id}/{sent.token}/", f"/webhooks/{self.application_id}/{sent.token}")
            )
        ]

    def replies(self, sent: SentInteraction) -> list[Reply]:
        """Messages the bot sent for `sent`, in order; defers and deletes are not messages."""
        found = []
        for r in self.requests_for(sent):
            body = r.body if isinstance(r.body, dict) else {}
            if r.method == "POST" and r.path.endswith("/callback"):
                if body.get("type") != 4:
                    continue
                kind, body = "response", body.get("data") or {}
            elif r.method == "POST":
                kind = "followup"
            elif r.method == "PATCH":
                kind = "edit"
            else:
                continue
            found.append(
                Reply(kind, body.get("content"), body.get("embeds") or [], int(body.get("flags") or 0))
            )
        return found

    async def wait_for_reply(self, sent: SentInteraction, timeout: float = WAIT_TIMEOUT) -> Reply:
        """The first message the bot sent for `sent`, waiting (bounded) for it."""
        await self.wait_until(lambda: bool(self.replies(sent)), timeout)
        return self.replies(sent)[0]

    # ---- pushing events

    async def dispatch(self, event: str, data: dict[str, Any]) -> int | None:
        """Send a DISPATCH (op 0) to every identified session of the event's guild's shard.

        Returns that shard's id (None when the sessions are unsharded).
        """
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        sessions = [s for s in self._sessions if s.identified and not s.ws.closed and s.receives(guild_id)]
        if not sessions:
            raise RuntimeError(f"no identified gateway session for guild {guild_id} to dispatch to")
        for session in sessions:
            await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": next(session.seq), "d": data}))
        shard = sessions[0].shard
        return None if shard is None else shard[0]

    async def drop_sessions(self, code: int = 4000) -> None:
        """Close every gateway session with `code`, as Discord does before asking a client to resume."""
        for session in list(self._sessions):
            await session.ws.close(code=code)

    def interaction_payload(
        self,
        name: str,
        *,
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
        user_id: int = 300000000000000001,
        permissions: int = 0,
        guild_id: int | None = None,
        interaction_id: int | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload for slash command `name` used in a guild by `user_id`."""
        guild = guild_id or self.guild_id
        command_id = next(
            (int(c["id"]) for cmds in self.commands.values() for c in cmds if c["name"] == name),
            next(self._ids),
        )
        return {
            "id": str(interaction_id or next(self._ids)),
            "application_id": str(self.application_id),
            "type": 2,
            "token": token or f"interaction-token-{next(self._ids)}",
            "version": 1,
            "data": {
                "id": str(command_id),
                "name": name,
                "type": 1,
                "options": subcommand_options(subcommand, options or {}),
            },
            "guild_id": str(guild),
            "channel_id": str(CHANNEL_ID),
            "channel": {
                "id": str(CHANNEL_ID),
                "type": 0,
                "name": "general",
                "guild_id": str(guild),
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            },
            "member": {
                "user": user_payload(user_id, f"user{user_id % 1000}"),
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
                "permissions": str(permissions),
            },
            "locale": "en-US",
            "guild_locale": "en-US",
            "app_permissions": str(discord.Permissions.text().value),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }

    async def send_interaction(self, name: str, **kwargs: Any) -> SentInteraction:
        """Push a slash-command interaction (see `interaction_payload`) and return its id and token."""
        payload = self.interaction_payload(name, **kwargs)
        shard = await self.dispatch("INTERACTION_CREATE", payload)
        return SentInteraction(int(payload["id"]), payload["token"], name, shard)

    # ---- gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = _Session(ws)
        self._sessions.append(session)
        try:
            await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                self.gateway_opcodes.append(frame.get("op"))
                await self._on_frame(session, frame)
                self._notify()
        finally:
            self._sessions.remove(session)
            self.gateway_closes.append(ws.close_code)
            self._notify()
        return ws

    async def _on_frame(self, session: _Session, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == 1:  # HEARTBEAT -> HEARTBEAT_ACK
            await session.ws.send_str(json.dumps({"op": 11}))
        elif op == 2:  # IDENTIFY -> READY
            await self._identify(session, data)
        elif op == 6:  # RESUME -> RESUMED
            session.identified = True
            session.shard = self._resumable.get(str(data.get("session_id")))
            await session.ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": next(session.seq), "d": {}}))

    async def _identify(self, session: _Session, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await session.ws.close(code=AUTH_FAILED, message=b"Authentication failed.")
            return
        shard = data.get("shard")
        if shard is not None:
            if not (isinstance(shard, list) and len(shard) == 2 and 0 <= shard[0] < shard[1]):
                await session.ws.close(code=INVALID_SHARD, message=b"Invalid shard.")
                return
            session.shard = (shard[0], shard[1])
        if (session.shard[1] if session.shard else 1) < self.required_shards:
            await session.ws.close(code=SHARDING_REQUIRED, message=b"Sharding required.")
            return
        self.identifies.append(session.shard)
        session.identified = True
        session_id = f"fake-session-{next(self._ids)}"
        self._resumable[session_id] = session.shard
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}]
            if session.receives(self.guild_id)
            else [],
            "session_id": session_id,
            "resume_gateway_url": str(self.gateway_url),
            "application": {"id": str(self.application_id), "flags": 0},
        }
        if session.shard is not None:
            ready["shard"] = list(session.shard)
        await session.ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(session.seq), "d": ready}))
        self.identified.set()

    # ---- REST

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        self.requests.append(Recorded(request.method, path, dict(request.query), body, authorized))
        self._notify()
        return self._answer(request.method, path.split("/")[1:], request.query, body, authorized)

    def _answer(
        self, method: str, parts: list[str], query: Any, body: Any, authorized: bool
    ) -> web.StreamResponse:
        if parts[0] in {"interactions", "webhooks"}:  # authenticated by the interaction token
            return self._interaction_answer(method, parts, query, body)
        if not authorized:
            return error_response(401, "401: Unauthorized")
        route = (method, *parts)
        if route == ("GET", "users", "@me"):
            return json_response(self.bot_user)
        if route in {("GET", "gateway"), ("GET", "gateway", "bot")}:
            return json_response(
                {
                    "url": str(self.gateway_url),
                    "shards": self.shard_count,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if route in {("GET", "oauth2", "applications", "@me"), ("GET", "applications", "@me")}:
            return json_response(self._application())
        if method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            scope = "global" if len(parts) == 3 else f"guild:{parts[3]}"
            self.commands[scope] = [self._with_ids(c, parts) for c in body or []]
            return json_response(self.commands[scope])
        if method == "GET" and parts[0] == "applications" and parts[-1] == "commands":
            scope = "global" if len(parts) == 3 else f"guild:{parts[3]}"
            return json_response(self.commands.get(scope, []))
        return error_response(404, "404: Not Found (the fake does not know this route)")

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": "Courier",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": user_payload(self.app_owner_id, "owner"),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
        }

    def _with_ids(self, command: dict[str, Any], parts: list[str]) -> dict[str, Any]:
        result = {
            **command,
            "id": str(next(self._ids)),
            "application_id": str(self.application_id),
            "version": str(next(self._ids)),
        }
        if len(parts) > 3:
            result["guild_id"] = parts[3]
        return result

    def _interaction_answer(self, method: str, parts: list[str], query: Any, body: Any) -> web.StreamResponse:
        if parts[0] == "interactions" and method == "POST" and parts[-1] == "callback":
            data = (body.get("data") or {}) if isinstance(body, dict) else {}
            callback_type = body.get("type") if isinstance(body, dict) else None
            return json_response(
                {
                    "interaction": {
                        "id": parts[1],
                        "type": 2,
                        "response_message_loading": callback_type == 5,
                        "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL),
                    }
                }
            )
        if parts[0] == "webhooks" and int(parts[1]) == self.application_id:
            if method == "DELETE":
                return web.Response(status=204)
            if method == "POST" and query.get("wait") not in {"1", "true", "True"}:
                return web.Response(status=204)
            return json_response(self._message(body if isinstance(body, dict) else {}))
        return error_response(404, "404: Unknown Webhook", 10015)

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(next(self._ids)),
            "channel_id": str(CHANNEL_ID),
            "type": 0,
            "content": body.get("content") or "",
            "author": self.bot_user,
            "embeds": body.get("embeds") or [],
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "components": [],
            "pinned": False,
            "tts": False,
            "mention_everyone": False,
            "timestamp": "2024-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": int(body.get("flags") or 0),
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
        }
