"""The bot's one typed configuration: a TOML file overridden by LUCIE_BOT_ environment variables."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.config_errors import describe
from bot.config_guard import (
    GuardAction,
    GuardBackend,
    GuardSettings,
    LlamaGuardSettings,
    OpenAIModerationSettings,
    QuotaSettings,
    RuleSettings,
)
from bot.config_urls import http_url
from bot.config_webhook import WebhookSettings
from bot.errors import UsageError

__all__ = [
    "GuardAction",
    "GuardBackend",
    "GuardSettings",
    "LlamaGuardSettings",
    "OpenAIModerationSettings",
    "QuotaSettings",
    "RuleSettings",
]

Lang = Literal["fr", "en"]
ENV_PREFIX = "LUCIE_BOT_"


class ConfigError(UsageError):
    """A configuration problem, worded as one line for the operator."""


class MatrixSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    homeserver: str = Field(description="Homeserver base URL, e.g. https://matrix.example.org")
    user_id: str = Field(description="The bot's full Matrix id, e.g. @lucie:example.org")
    password: SecretStr | None = Field(default=None, description="Used once, to log in")
    access_token: SecretStr | None = None
    device_id: str | None = None
    device_name: str = "lucie-bot"
    display_name: str | None = Field(
        default="Lucie", description="Set at start-up; people can mention the bot by it"
    )
    allowed_inviters: list[str] = Field(
        default_factory=list,
        description="Globs over user ids or servers whose invites are accepted",
    )
    encryption: bool = True
    cross_signing: bool = Field(
        default=True, description="Sign the bot's device with its own cross-signing identity"
    )
    key_backup: bool = Field(
        default=True,
        description="Back up room keys on the homeserver, so a new device can read past messages",
    )
    key_wait_s: float = Field(
        default=60.0,
        ge=0,
        description="How long an encrypted message waits for its key before a notice says so",
    )
    sync_timeout_ms: int = Field(default=30_000, ge=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("user_id")
    @classmethod
    def _mxid(cls, value: str) -> str:
        if not value.startswith("@") or ":" not in value:
            raise ValueError("must be a full Matrix id like @lucie:example.org")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> MatrixSettings:
        has_token = self.access_token is not None and self.device_id is not None
        if self.password is None and not has_token:
            raise ValueError("set matrix.password, or matrix.access_token with matrix.device_id")
        return self


class LLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = "http://127.0.0.1:8000/v1"
    base_urls: list[str] = Field(
        default_factory=list, description="Replicas; when set, used instead of base_url"
    )
    model: str = "OpenLLM-France/Lucie-7B-Instruct"
    api_key: SecretStr | None = None
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_tokens: int = Field(default=1024, gt=0)
    context_tokens: int = Field(
        default=4096, gt=0, description="Token budget of the prompt sent to the model"
    )
    tokenize: Literal["auto", "off"] = "auto"
    max_concurrent_requests: int = Field(
        default=64,
        ge=1,
        description="Model requests under way at once, at most (vLLM batches hundreds)",
    )
    follow_server_queue: bool = Field(
        default=True,
        description="Send fewer requests while the model server's /metrics show its own queue",
    )
    max_queued_answers: int = Field(
        default=100,
        ge=1,
        description="Answers waiting for the model beyond which new questions are turned away",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_token_timeout_s: float = Field(default=60.0, gt=0)
    chunk_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("base_urls")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        return [http_url(value) for value in values]


class BotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command_prefix: str = Field(default="!lucie", min_length=1)
    default_lang: Lang = "fr"
    operators: list[str] = Field(default_factory=list, description="User ids with admin rights")
    catch_up_minutes: float = Field(default=10.0, ge=0)
    dm_idle_minutes: float = Field(default=60.0, gt=0)
    dm_history_messages: int = Field(default=20, ge=1)
    first_text_delay_s: float = Field(
        default=0.25,
        ge=0,
        description="Wait after the first token, so that a short answer goes out whole, unedited",
    )
    streaming: bool = Field(
        default=True,
        description="Show an answer as it is written (one message, then edits); off: one "
        "message once the answer is complete",
    )
    edit_interval_s: float = Field(default=1.5, ge=0)
    max_edits_per_answer: int = Field(default=20, ge=0)
    final_edit_timeout_s: float = Field(default=600.0, gt=0)
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long answers under way may finish"
    )
    prompts_dir: Path | None = Field(
        default=None, description="Folder with system.<lang>.md and join_notice.<lang>.md"
    )
    fair_use_window_s: float = Field(
        default=600.0, gt=0, description="The sliding window of the per-person limits below"
    )
    questions_per_person: int = Field(
        default=20, ge=0, description="Questions one person may ask per window (0: no limit)"
    )
    regenerations_per_person: int = Field(
        default=10, ge=0, description="Regenerations one person may ask per window (0: no limit)"
    )
    max_answers_per_question: int = Field(
        default=5, ge=1, description="Answers one question may get, regenerations included"
    )
    commands_per_person: int = Field(
        default=30, ge=0, description="Commands one person may run per window, then ignored"
    )
    reactions_per_person: int = Field(
        default=120, ge=0, description="Reactions of one person counted per window, then ignored"
    )


DEFAULT_REASONS = {
    "❌": "incorrect",
    "🤔": "incoherent",
    "📚": "missing_sources",
    "✂️": "too_long",
    "🎯": "accurate",
}


# A short key can be guessed, and a guessed key turns every pseudonymous id back into a person.
MIN_PSEUDONYM_SECRET = 32


class DataSettings(BaseModel):
    """Training data: what is collected, on what terms, and how exports are pseudonymised."""

    model_config = ConfigDict(extra="forbid")

    collection: Literal["off", "opt_in"] = "opt_in"
    notice_version: int = Field(default=1, ge=1, description="Raise when the consent text changes")
    licence: str = "CC-BY-4.0"
    pseudonym_secret: SecretStr | None = Field(
        default=None,
        description=f"Keys the pseudonymous ids in exports; stable, secret, at least"
        f" {MIN_PSEUDONYM_SECRET} characters (exports refuse a shorter one)",
    )
    scrub: bool = Field(
        default=True, description="Replace e-mails, phones, Matrix ids and URLs in exported texts"
    )
    reason_emojis: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_REASONS))


class OpsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="Loopback by default: not for the world")
    port: int = Field(default=9108, ge=1, le=65535)
    health_cache_s: float = Field(
        default=5.0,
        ge=1,
        description="/healthz probes the database and model servers at most this often",
    )


class RagSettings(BaseModel):
    """Grounding: documents shared in rooms and operators' collections, retrieved and cited."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    collections: list[str] = Field(
        default_factory=list, description="Operator collections every room uses unless it opts out"
    )
    open_collections: list[str] = Field(
        default_factory=list,
        description="Other collections room admins may turn on; the rest only operators may",
    )
    passage_chars: int = Field(
        default=1000, ge=200, le=8000, description="Passage size, sized for the embeddings model"
    )
    overlap_chars: int = Field(default=150, ge=0, le=2000)
    top_k: int = Field(default=5, ge=1, le=20, description="Passages given to the model")
    candidates: int = Field(
        default=30, ge=1, le=200, description="Passages each retriever proposes before fusion"
    )
    sources_share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Share of the prompt budget the sources may take; the conversation the rest",
    )
    max_file_mb: float = Field(default=25.0, gt=0, description="Larger files are refused")
    max_pages: int = Field(default=2000, ge=1, description="Longer documents are refused")
    files_per_person: int = Field(
        default=10, ge=0, description="Files one person may have indexed per fair-use window"
    )
    max_waiting_files: int = Field(
        default=16, ge=1, description="Files waiting to be indexed; beyond, people are told to wait"
    )
    embeddings_url: str | None = Field(
        default=None, description="An OpenAI-compatible /v1/embeddings server (base URL, …/v1)"
    )
    embeddings_model: str = "intfloat/multilingual-e5-small"
    embeddings_api_key: SecretStr | None = None
    query_prefix: str = Field(default="query: ", description="e5 models need it; others ''")
    passage_prefix: str = "passage: "
    embeddings_input_type: bool = Field(
        default=False,
        description="Send input_type query/passage (servers that add the prefixes themselves)",
    )
    dimensions: int | None = Field(
        default=None, ge=1, le=8192, description="Ask the server for this size"
    )
    embeddings_batch: int = Field(default=32, ge=1, le=2048)
    min_similarity: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="A dense match below this cosine counts as unrelated (0: all kept)",
    )
    rerank_url: str | None = Field(
        default=None, description="A /v1/rerank server (vLLM, llama.cpp, TEI, Jina/Cohere-style)"
    )
    rerank_model: str = "BAAI/bge-reranker-v2-m3"
    rerank_api_key: SecretStr | None = None
    timeout_s: float = Field(
        default=20.0, gt=0, description="Each call to the embeddings or rerank server"
    )

    @field_validator("embeddings_url", "rerank_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # docker compose's ${VAR:-} passes unset variables as "": they must not blank the file
        env_ignore_empty=True,
        extra="forbid",
    )

    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    log_content: bool = Field(
        default=False, description="Log message texts (debugging only; off protects privacy)"
    )
    matrix: MatrixSettings
    llm: LLMSettings = Field(default_factory=LLMSettings)
    bot: BotSettings = Field(default_factory=BotSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)

    @model_validator(mode="after")
    def _keys_apart(self) -> Settings:
        webhook, pseudonyms = self.webhook.secret, self.data.pseudonym_secret
        if webhook and pseudonyms and webhook.get_secret_value() == pseudonyms.get_secret_value():
            # a receiver holds the webhook's secret: with it, it would recompute the exports'
            # pseudonyms of anyone it can name
            raise ValueError("webhook.secret must differ from data.pseudonym_secret")
        return self


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the TOML file (if any) under the environment; raise ConfigError naming the field."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")
        try:
            tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return tuple(sources)

    try:
        loaded = _FileSettings()  # type: ignore[call-arg]  # the sources fill it in
    except ValidationError as exc:
        raise ConfigError(describe(exc, Settings, ENV_PREFIX)) from None
    return Settings.model_construct(**dict(loaded))
