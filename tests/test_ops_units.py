"""/healthz is cheap and discreet: checks cached for a few seconds (one probe however many hits),
no database write per hit, and never a model server's address (it may carry credentials)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings, load_settings
from bot.core.metrics import Metrics
from bot.ops.server import OpsServer
from tests.support.synapse import free_port

SECRET_URL = "http://bot:s3cret-token@gpu-a.internal:8000/v1"


class CountingStore:
    def __init__(self) -> None:
        self.writes = 0
        self.ok = True

    async def writable(self) -> bool:
        self.writes += 1
        await asyncio.sleep(0.05)  # a real write takes a moment: hits arrive meanwhile
        return self.ok


class CountingModel:
    def __init__(self) -> None:
        self.probes = 0
        self.up = {SECRET_URL: True, "http://gpu-b.internal:8000/v1": False}

    async def reachable(self) -> dict[str, bool]:
        self.probes += 1
        await asyncio.sleep(0.05)
        return dict(self.up)


def settings_for(folder: Path) -> Settings:
    config = folder / "config.toml"
    config.write_text(
        "[matrix]\nhomeserver = 'http://h'\nuser_id = '@lucie:h'\npassword = 'p'\n"
        f"[ops]\nport = {free_port()}\nhealth_cache_s = 1\n"
    )
    return load_settings(config)


async def test_health_checks_are_cached_shared_and_name_no_server(tmp_path):
    settings = settings_for(tmp_path)
    store, model = CountingStore(), CountingModel()
    ops = OpsServer(settings, Metrics(), store, model, time.monotonic)  # type: ignore[arg-type]
    await ops.start()
    url = f"http://127.0.0.1:{settings.ops.port}/healthz"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answers = await asyncio.gather(*(http.get(url) for _ in range(30)))
            assert store.writes == 1 and model.probes == 1  # thirty hits, one probe each
            body: dict[str, Any] = answers[0].json()
            assert all(a.json() == body for a in answers)
            assert answers[0].status_code == 200
            assert body["checks"] == {
                "sync": True, "database": True, "model": True, "model_servers": [True, False],
            }  # fmt: skip
            for answer in answers:
                for leaked in ("s3cret", "gpu-a", "gpu-b", "http"):
                    assert leaked not in answer.text

            model.up = dict.fromkeys(model.up, False)
            store.ok = False
            assert (await http.get(url)).status_code == 200  # still the cached verdict
            await asyncio.sleep(1.1)
            failing = await http.get(url)
            assert failing.status_code == 503 and store.writes == 2 and model.probes == 2
            checks = failing.json()["checks"]
            assert checks["database"] is False and checks["model"] is False
    finally:
        await ops.stop()
