"""The [webhook] part of the configuration: feedback forwarded, signed, to a team's own receiver
(see config/example.toml and the README's "Feedback to a webhook")."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bot.config_urls import http_url

# as for the pseudonym secret: a guessed key lets anyone forge events the receiver trusts
MIN_WEBHOOK_SECRET = 32


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookSettings(BaseModel):
    """Off unless url is set."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="Where each consented vote, label, correction and regeneration is POSTed "
        "as signed JSON; https unless the receiver is on this machine (loopback)",
    )
    secret: SecretStr | None = Field(
        default=None,
        description=f"Signs each event (HMAC-SHA256); at least {MIN_WEBHOOK_SECRET} characters",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Each POST, whole")
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Tries of one event the receiver fails with a server error (500…), or "
        "drops the connection on while it answers others; an unreachable or unavailable "
        "receiver (502, 503, 504, 429, no answer at all) is waited for",
    )
    max_backoff_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest wait between two tries"
    )
    queue_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Events waiting for the receiver, kept in the database; beyond, the "
        "oldest are dropped",
    )
    include_text: bool = Field(
        default=True,
        description="Send a correction's text, masked as exports mask it (personal "
        "identifiers, people's names, e-mails, phones, Matrix ids, URLs); false: only that a "
        "correction was made",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        http_url(value)  # checked, but kept as written: a receiver may need its trailing slash
        parts = urlsplit(value)
        if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
            # feedback travels with pseudonyms and correction texts: never in clear over a network
            raise ValueError("must use https:// unless the receiver is on loopback")
        return value

    @model_validator(mode="after")
    def _signed(self) -> WebhookSettings:
        if self.url is None:
            return self
        secret = self.secret.get_secret_value() if self.secret else ""
        if len(secret.strip()) < MIN_WEBHOOK_SECRET:
            raise ValueError(
                f"webhook.secret must be at least {MIN_WEBHOOK_SECRET} characters when "
                "webhook.url is set (LUCIE_BOT_WEBHOOK__SECRET; `openssl rand -hex 32`)"
            )
        return self
