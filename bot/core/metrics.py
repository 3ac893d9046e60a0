"""What the bot counts for /metrics (Prometheus text format via prometheus-client)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bot.core.ports import ChatPort, RateLimited

LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
CHECK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.answers = Counter(
            "lucie_bot_answers", "Answers by how they ended", ["status"], registry=r
        )
        self.errors = Counter(
            "lucie_bot_model_errors", "Model server failures by kind", ["kind"], registry=r
        )
        self.first_token = Histogram(
            "lucie_bot_first_token_seconds",
            "From the question to the model's first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.final_answer = Histogram(
            "lucie_bot_final_answer_seconds",
            "From the question to the final text",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("lucie_bot_tokens", "Tokens generated", registry=r)
        self.queue = Gauge("lucie_bot_queue_length", "Answers waiting for a model slot", registry=r)
        self.rate_limit_waits = Counter(
            "lucie_bot_rate_limit_waits", "Homeserver answers asking to wait (429)", registry=r
        )
        self.votes = Counter("lucie_bot_votes", "Votes received", ["vote"], registry=r)
        self._guard_metrics(r)
        self.awaiting_keys = Gauge(
            "lucie_bot_messages_awaiting_keys",
            "Encrypted messages kept until their room key arrives",
            registry=r,
        )

    def _guard_metrics(self, r: CollectorRegistry) -> None:
        self.moderation_flags = Counter(
            "lucie_bot_moderation_flags",
            "Moderation decisions other than a pass, by stage, category and action",
            ["stage", "category", "action"],
            registry=r,
        )
        self.moderation_failures = Counter(
            "lucie_bot_moderation_failures",
            "Moderation servers down, slow or answering nonsense, by backend",
            ["backend"],
            registry=r,
        )
        self.moderation_seconds = Histogram(
            "lucie_bot_moderation_seconds",
            "Time of one moderation check, by backend",
            ["backend"],
            buckets=CHECK_BUCKETS,
            registry=r,
        )
        self.personal_data = Counter(
            "lucie_bot_personal_data_masked",
            "Personal identifiers masked before storage, by kind",
            ["kind"],
            registry=r,
        )
        self.quota_refusals = Counter(
            "lucie_bot_quota_refusals",
            "Questions refused by a quota, by quota",
            ["quota"],
            registry=r,
        )
        self.quota_limited = Gauge(
            "lucie_bot_quota_limited",
            "People and rooms currently at one of their quotas",
            ["scope"],
            registry=r,
        )
        self.busy_refusals = Counter(
            "lucie_bot_busy_refusals",
            "Questions turned away because too many answers were waiting",
            registry=r,
        )

    def observe_check(self, backend: str, seconds: float, failed: bool) -> None:
        """One moderation check: its time, and whether the server failed."""
        self.moderation_seconds.labels(backend).observe(seconds)
        if failed:
            self.moderation_failures.labels(backend).inc()


class CountingPort:
    """The Matrix port, counting the homeserver's rate-limit answers on the way."""

    def __init__(self, port: ChatPort, metrics: Metrics) -> None:
        self._port = port
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    async def send(self, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        try:
            return await self._port.send(room_id, content, txn_id)
        except RateLimited:
            self._metrics.rate_limit_waits.inc()
            raise
