"""Pictures the bot posts after a command's text (`!lucie stats`' chart): drawn, uploaded to the
homeserver's media repository, then sent as an m.image replying to the command.

Best effort: the text has already gone, so a chart that cannot be drawn, an upload the
homeserver refuses (too large, forbidden, rate limited) or a timeout is logged, without any
content, and the bot carries on."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bot.core.ports import ChatPort, Image, SendFailed
from bot.core.render import message_content
from bot.core.streaming import NOTICE_TIMEOUT_S, retrying

log = logging.getLogger(__name__)


def image_content(
    image: Image, media: dict[str, Any], reply_to: str | None, thread: str | None
) -> dict[str, Any]:
    """An m.image message: the file's name as body (no caption), its type and size for clients
    to lay it out, and media ({"url"} or, in an encrypted room, {"file"}) to fetch it."""
    content = message_content(image.name, "m.image", reply_to=reply_to, thread_root=thread)
    del content["format"], content["formatted_body"]  # a caption would repeat the name
    info = {"mimetype": image.mimetype, "w": image.width, "h": image.height,
            "size": len(image.data)}  # fmt: skip
    return {**content, "filename": image.name, "info": info, **media}


async def send_image(
    port: ChatPort,
    room_id: str,
    make: Callable[[], Awaitable[Image | None]],
    reply_to: str | None = None,
    thread: str | None = None,
) -> str | None:
    """Draw, upload and send; the event id, or None if there was nothing to show or it failed."""
    try:
        image = await make()
        if image is None:
            return None
        media = await port.upload(room_id, image)
        content = image_content(image, media, reply_to, thread)
        txn_id = uuid.uuid4().hex  # one id for every try: the homeserver keeps a single copy
        sent = await retrying(lambda: port.send(room_id, content, txn_id), NOTICE_TIMEOUT_S)
    except SendFailed as exc:  # SendRefused included
        log.warning("could not post a picture in %s: %s", room_id, exc)
        return None
    except Exception as exc:  # a drawing that broke must not take the command's task with it
        log.warning("could not make a picture for %s: %s", room_id, type(exc).__name__)
        return None
    if sent is None:
        log.warning("gave up posting a picture in %s: the homeserver kept failing", room_id)
    return sent
