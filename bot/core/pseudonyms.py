"""Keyed hashes of user ids for the bot's own bookkeeping (incidents, quotas): stable across
restarts, not the id itself, and not the keys exports use."""

from __future__ import annotations

import hashlib
import hmac


class LocalPseudonyms:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def of(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:24]
