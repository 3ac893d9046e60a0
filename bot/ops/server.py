"""/healthz and /metrics over HTTP, on loopback unless the operator says otherwise."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.config import Settings
from bot.core.metrics import Metrics
from bot.errors import OperatorError
from bot.llm.client import ChatModel
from bot.storage.connection import Database

log = logging.getLogger(__name__)
T = TypeVar("T")


class OpsUnavailable(OperatorError):
    """The health and metrics port cannot be opened; worded as one line."""


class Cached(Generic[T]):
    """A check's last result, run again at most every ttl_s: a monitor polling every second, or
    anyone hammering the port, costs one probe per period. Callers arriving while it runs share
    that run."""

    def __init__(self, check: Callable[[], Awaitable[T]], ttl_s: float) -> None:
        self._check = check
        self._ttl_s = ttl_s
        self._value: T | None = None
        self._at = -math.inf
        self._lock = asyncio.Lock()

    async def get(self) -> T:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at >= self._ttl_s:
                self._value = await self._check()
                self._at = time.monotonic()
            return self._value


class OpsServer:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        database: Database,
        model: ChatModel,
        last_sync: Callable[[], float | None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.last_sync = last_sync
        self._runner: web.AppRunner | None = None
        # a sync may legitimately take its long-poll time plus one request time-out
        matrix = settings.matrix
        self.sync_stale_s = matrix.sync_timeout_ms / 1000 + matrix.request_timeout_s + 30
        ttl_s = settings.ops.health_cache_s
        # hits wait for the probe under way: a server that never finishes answering must not
        # hold them all
        probe_bound_s = settings.llm.connect_timeout_s + 5
        # a real write (a read cannot see a read-only or full disk), but at most one per period
        self._database = Cached(lambda: _safely(database.writable), ttl_s)
        self._model = Cached(lambda: _bounded(model.reachable(), probe_bound_s), ttl_s)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ops = self.settings.ops
        try:
            await web.TCPSite(self._runner, ops.host, ops.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OpsUnavailable(
                f"cannot serve health and metrics on {ops.host}:{ops.port} ({exc.strerror}): "
                "set ops.port to a free port, or ops.enabled = false"
            ) from None
        log.info("health and metrics on http://%s:%d", ops.host, ops.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        synced = self.last_sync()
        database, servers = await asyncio.gather(self._database.get(), self._model.get())
        checks: dict[str, bool | list[bool]] = {
            "sync": synced is not None and time.monotonic() - synced < self.sync_stale_s,
            "database": database,
            "model": any(servers.values()),
        }
        healthy = all(checks.values())
        # in the configured order; never the URLs, which may hold credentials
        checks["model_servers"] = list(servers.values())
        return web.json_response(
            {"status": "ok" if healthy else "failing", "checks": checks},
            status=200 if healthy else 503,
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _bounded(probe: Awaitable[dict[str, bool]], bound_s: float) -> dict[str, bool]:
    try:
        async with asyncio.timeout(bound_s):
            return await probe
    except TimeoutError:
        log.warning("model servers did not answer the health probe within %.0f s", bound_s)
        return {}


async def _safely(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await check()
    except Exception as exc:
        log.warning("health check failed: %s", type(exc).__name__)
        return False
