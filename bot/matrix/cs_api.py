"""Small helpers for client-server API calls that matrix-nio does not make for us."""

from __future__ import annotations

from typing import Any

import httpx

from bot.tls import tls_context


def client(
    homeserver: str, access_token: str | None, timeout_s: float, path: str = ""
) -> httpx.AsyncClient:
    """The one way the bot makes raw client-server calls: the v3 API under its homeserver,
    authenticated with its token (none for logging in), every call bounded by timeout_s."""
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return httpx.AsyncClient(
        base_url=f"{homeserver.rstrip('/')}/_matrix/client/v3{path}",
        headers=headers,
        timeout=timeout_s,
        verify=tls_context(),
    )


def json_body(response: httpx.Response) -> dict[str, Any]:
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
