"""Guardrails' part of the configuration ([guard] and its tables): see config/example.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bot.config_urls import http_url

GuardAction = Literal["refuse", "log", "allow"]
GuardBackend = Literal["rules", "llama_guard", "openai"]


def _rules_only() -> list[GuardBackend]:
    return ["rules"]


def _specialised_advice_logged() -> dict[str, GuardAction]:
    return {"S6": "log"}


def _http_url(value: str | None) -> str | None:
    return None if value is None else http_url(value)


class LlamaGuardSettings(BaseModel):
    """A Llama Guard 3 model (1B or 8B) behind chat completions (vLLM, llama.cpp)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="Base URL of its server, e.g. …/v1")
    model: str = "meta-llama/Llama-Guard-3-8B"
    api_key: SecretStr | None = None
    prompt: Literal["server", "bot"] = Field(
        default="server",
        description="server: the model's own chat template writes Llama Guard's task prompt"
        " (vLLM, llama.cpp with the model's template); bot: the bot writes it, in one user turn",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value)


class OpenAIModerationSettings(BaseModel):
    """An OpenAI-compatible /v1/moderations endpoint (a LiteLLM proxy, for instance)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="Base URL, e.g. …/v1")
    model: str = "omni-moderation-latest"
    api_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value)


class RuleSettings(BaseModel):
    """One embedded rule: words (whole words, accents and case ignored) or RE2 patterns."""

    model_config = ConfigDict(extra="forbid")

    category: str = Field(min_length=1, max_length=64)
    lang: Literal["fr", "en", "any"] = "any"
    words: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list, description="RE2 syntax: linear time")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, values: list[str]) -> list[str]:
        from bot.guard.patterns import compile_pattern  # only when rules are configured

        for value in values:
            compile_pattern(value)
        return values


class QuotaSettings(BaseModel):
    """Fair use over hours and days, kept in the database so a restart changes nothing."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    questions_per_hour: int = Field(default=60, ge=0, description="Per person (0: no limit)")
    questions_per_day: int = Field(default=300, ge=0)
    room_questions_per_hour: int = Field(default=600, ge=0, description="Per room")
    room_questions_per_day: int = Field(default=5000, ge=0)
    tokens_per_day: int = Field(
        default=200_000, ge=0, description="Model tokens (prompt and answer) per person and day"
    )
    room_tokens_per_day: int = Field(default=2_000_000, ge=0)
    exempt: list[str] = Field(
        default_factory=list, description="User ids exempt from quotas (operators always are)"
    )
    hour_s: float = Field(default=3600.0, gt=0, description="The 'hour' window (tests shorten it)")
    day_s: float = Field(default=86400.0, gt=0, description="The 'day' window")


class GuardSettings(BaseModel):
    """Guardrails: the operators' policy prompt, moderation before and after the model,
    personal data kept out of storage, incidents, quotas."""

    model_config = ConfigDict(extra="forbid")

    policy_fr: Path | None = Field(
        default=None, description="The operators' policy, always sent first (default: shipped)"
    )
    policy_en: Path | None = None
    backends: list[GuardBackend] = Field(
        default_factory=_rules_only, description="Moderation backends, checked in turn"
    )
    check_question: bool = True
    check_passages: bool = True
    check_answer: bool = True
    stance: Literal["fail_open", "fail_closed"] = Field(
        default="fail_closed",
        description="When a moderation server is down or slow: let the text through, or refuse",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="Each moderation call")
    actions: dict[str, GuardAction] = Field(
        default_factory=_specialised_advice_logged,
        description="Per category (S1…S14, a moderation category, or a rule's): refuse, log, allow",
    )
    default_action: GuardAction = "refuse"
    default_rules: bool = Field(default=True, description="Use the shipped rules as well")
    rules: list[RuleSettings] = Field(default_factory=list)
    llama_guard: LlamaGuardSettings = Field(default_factory=LlamaGuardSettings)
    openai: OpenAIModerationSettings = Field(default_factory=OpenAIModerationSettings)
    mask_personal_data: bool = Field(
        default=True, description="Mask NIR, IBAN, phones, e-mails, addresses before storage"
    )
    alert_room: str | None = Field(
        default=None, description="A room id where operators get one line per incident"
    )
    alerts_per_minute: int = Field(default=6, ge=1, le=120)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)

    def policies(self) -> dict[str, Path | None]:
        return {"fr": self.policy_fr, "en": self.policy_en}

    @field_validator("alert_room")
    @classmethod
    def _room_id(cls, value: str | None) -> str | None:
        # room version 12 ids carry no server name: "!" and a hash
        if value is not None and (
            not value.startswith("!") or len(value) > 255 or any(c.isspace() for c in value)
        ):
            raise ValueError("must be a room id like !abc:example.org")
        return value

    @model_validator(mode="after")
    def _servers(self) -> GuardSettings:
        if "llama_guard" in self.backends and self.llama_guard.url is None:
            raise ValueError("backend llama_guard needs guard.llama_guard.url")
        if "openai" in self.backends and self.openai.url is None:
            raise ValueError("backend openai needs guard.openai.url")
        return self
