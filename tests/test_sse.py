"""Server-sent events read with a bound: an endless line from a hostile model server costs at
most the bound in memory, and ordinary streams parse as the format says."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.llm.sse import EventTooLarge, data_batches


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def collect(*parts: bytes, limit: int = 1024) -> list[str]:
    return [data async for batch in data_batches(chunks(*parts), limit) for data in batch]


async def test_events_split_anywhere_and_fields_other_than_data_ignored():
    stream = (
        b'data: {"a": 1}\n\n: keep-alive\n\n'
        b"event: x\nid: 7\ndata: b\r\ndata: c\r\n\r\ndata:[DONE]\n\n"
    )
    whole = await collect(stream)
    assert whole == ['{"a": 1}', "b\nc", "[DONE]"]
    one_byte_at_a_time = await collect(*[stream[i : i + 1] for i in range(len(stream))])
    assert one_byte_at_a_time == whole


async def test_events_are_grouped_by_the_read_that_completed_them():
    batches = [
        batch
        async for batch in data_batches(chunks(b"data: a\n\ndata: b\n\nda", b"ta: c\n\n"), 1024)
    ]
    assert batches == [["a", "b"], ["c"]]


async def test_an_endless_line_is_refused_at_the_bound():
    async def endless() -> AsyncIterator[bytes]:
        yield b"data: "
        while True:  # a server that never ends its line
            yield b"x" * 512

    with pytest.raises(EventTooLarge):
        async for _ in data_batches(endless(), limit=4096):
            pass
    with pytest.raises(EventTooLarge):  # nor many lines of one event
        await collect(*[b"data: " + b"y" * 100 + b"\n"] * 50, limit=1024)
