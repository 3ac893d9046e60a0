"""/healthz and /metrics over HTTP, on loopback unless the operator says otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.config import Settings
from bot.core.metrics import Metrics
from bot.llm.client import ChatModel
from bot.storage.store import Store

log = logging.getLogger(__name__)


class OpsUnavailable(Exception):
    """The health and metrics port cannot be opened; worded as one line."""


class OpsServer:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        store: Store,
        model: ChatModel,
        last_sync: Callable[[], float | None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.model = model
        self.last_sync = last_sync
        self._runner: web.AppRunner | None = None
        # a sync may legitimately take its long-poll time plus one request time-out
        matrix = settings.matrix
        self.sync_stale_s = matrix.sync_timeout_ms / 1000 + matrix.request_timeout_s + 30

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
        checks: dict[str, bool | dict[str, bool]] = {
            "sync": synced is not None and time.monotonic() - synced < self.sync_stale_s,
            "database": await _safely(self.store.writable),
        }
        servers = await self.model.reachable()
        checks["model"] = any(servers.values())
        healthy = all(bool(value) for value in checks.values())
        checks["model_servers"] = servers
        return web.json_response(
            {"status": "ok" if healthy else "failing", "checks": checks},
            status=200 if healthy else 503,
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _safely(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await check()
    except Exception as exc:
        log.warning("health check failed: %s", type(exc).__name__)
        return False
