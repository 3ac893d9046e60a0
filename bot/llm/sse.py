"""Server-sent events from httpx's raw byte stream, with a bound on each event's size.

httpx-sse (and httpx's own line iterator) keep a line in memory until its newline comes, so a
model server that sends one endless `data:` line could fill the bot's memory within the time-outs.
Chat completions need only the `data` field of each event, so that is all this reads."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

# one chunk of a chat completion is a few hundred bytes; a whole answer fits one Matrix event
MAX_EVENT_BYTES = 256 * 1024


class EventTooLarge(Exception):
    pass


async def data_batches(
    chunks: AsyncIterator[bytes], limit: int = MAX_EVENT_BYTES
) -> AsyncGenerator[list[str], None]:
    """The `data` of each event (its data lines joined by newlines), in order, grouped by the
    read that completed them: a reader that reads less often handles many events per wake-up."""
    pending = bytearray()
    data: list[bytes] = []
    size = 0
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            # only what came now is searched: a line dribbled a byte at a time costs linear time
            if len(pending) > limit:
                raise EventTooLarge(f"an event line over {limit} bytes")
            continue
        *lines, rest = bytes(pending).split(b"\n")
        pending = bytearray(rest)
        if len(pending) > limit:
            raise EventTooLarge(f"an event line over {limit} bytes")
        batch: list[str] = []
        for raw in lines:
            line = raw.removesuffix(b"\r")
            if not line:  # a blank line ends the event
                if data:
                    batch.append(b"\n".join(data).decode("utf-8", "replace"))
                data, size = [], 0
            elif line.startswith(b"data:"):
                value = line[5:].removeprefix(b" ")
                size += len(value)
                if size > limit:
                    raise EventTooLarge(f"an event over {limit} bytes")
                data.append(value)
            # other fields (event, id, retry) and comments (":") mean nothing here
        if batch:
            yield batch
    if data:
        yield [b"\n".join(data).decode("utf-8", "replace")]
