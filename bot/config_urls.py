"""The one check every URL in the configuration passes: a typo must fail `check-config`, not
leave `run` retrying a homeserver or model server it can never reach."""

from __future__ import annotations

from urllib.parse import urlsplit


def http_url(value: str) -> str:
    """An absolute http(s) URL with a host, without spaces or control characters; returned
    without its trailing slash (paths are joined to it). Errors do not repeat the value: a URL
    may carry a password."""
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError("contains a space or a control character")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host name (e.g. https://matrix.example.org)")
    try:
        parts.port  # noqa: B018  # urlsplit checks the port only when asked
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not have a #fragment")
    return value.rstrip("/")


def shown(url: str) -> str:
    """The URL as logs may show it: without a user name or password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
