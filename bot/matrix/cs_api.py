"""Small helpers for client-server API calls that matrix-nio does not make for us.

They go through aiohttp, as nio's own calls do: a second HTTP stack (httpx, its connection
pool and anyio) loaded at every start for the few calls of login, cross-signing and key
backup cost the bot about 3 MiB of memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

# a whole key backup comes in one answer: large for a bot in many rooms, never unbounded
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """A homeserver's answer, read whole."""

    status_code: int
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The decoded body; ValueError when it is not JSON."""
        return json.loads(self.body)


class CsClient:
    """The v3 client-server API under one homeserver, with one token, every call bounded."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.base_url = base_url
        self.headers = headers
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        if self._session is None:  # made inside the event loop, as aiohttp wants
            self._session = aiohttp.ClientSession(headers=self.headers, timeout=self.timeout)
        async with self._session.request(
            method, f"{self.base_url}{path}", json=json, params=params, allow_redirects=False
        ) as response:
            body = await response.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise aiohttp.ClientPayloadError(f"an answer over {MAX_BODY_BYTES} bytes")
            return Reply(response.status, body)

    async def get(self, path: str, params: dict[str, str] | None = None) -> Reply:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, json: Any = None) -> Reply:
        return await self.request("POST", path, json=json)

    async def put(self, path: str, json: Any = None, params: dict[str, str] | None = None) -> Reply:
        return await self.request("PUT", path, json=json, params=params)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> CsClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()


def client(homeserver: str, access_token: str | None, timeout_s: float, path: str = "") -> CsClient:
    """The one way the bot makes raw client-server calls: the v3 API under its homeserver,
    authenticated with its token (none for logging in), every call bounded by timeout_s."""
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return CsClient(f"{homeserver.rstrip('/')}/_matrix/client/v3{path}", headers, timeout_s)


def json_body(response: Reply) -> dict[str, Any]:
    """The response's JSON object, or {} when it has none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def password_auth(user_id: str, password: str, session: Any) -> dict[str, Any]:
    """The interactive-auth stage that answers a 401 with the account's password."""
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    return {**auth, "session": session} if isinstance(session, str) else auth
