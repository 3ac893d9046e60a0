"""Small helpers for client-server API calls that matrix-nio does not make for us."""

from __future__ import annotations

from typing import Any

import httpx


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
