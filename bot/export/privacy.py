"""Pseudonymous ids and text scrubbing for exported rows."""

from __future__ import annotations

import hashlib
import hmac
import re

# Order matters: Matrix ids and URLs before e-mails, e-mails before phone numbers.
_PATTERNS = [
    (re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE), "<URL>"),
    (re.compile(r"[@!#$][\w.=\-/+]+:[\w.\-]+(?::\d+)?"), "<MATRIX_ID>"),
    (re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), "<EMAIL>"),
    (
        re.compile(r"(?<!\w)(?:\+\d{1,3}[ .\-]?)?(?:\(?\d{1,4}\)?[ .\-]?){2,5}\d{2,4}(?!\w)"),
        "<PHONE>",
    ),
]
_MIN_PHONE_DIGITS = 8


class Pseudonyms:
    """Keyed hashes: stable across exports with the same secret, useless without it."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode("utf-8")

    def of(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}_{digest[:20]}"


class NameMask:
    """People's display names and user-id localparts, replaced in every exported text: a model
    told who speaks in a group room may repeat a name in its answer."""

    MIN_LENGTH = 3

    def __init__(self, names: set[str]) -> None:
        usable = sorted({n for n in names if len(n) >= self.MIN_LENGTH}, key=len, reverse=True)
        alternation = "|".join(re.escape(name) for name in usable)
        self._pattern = (
            re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE) if usable else None
        )

    def __call__(self, text: str) -> str:
        return self._pattern.sub("<NAME>", text) if self._pattern else text


def scrub(text: str) -> str:
    for pattern, placeholder in _PATTERNS:
        if placeholder == "<PHONE>":
            text = pattern.sub(_phone, text)
        else:
            text = pattern.sub(placeholder, text)
    return text


def _phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "<PHONE>" if digits >= _MIN_PHONE_DIGITS else match.group(0)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
