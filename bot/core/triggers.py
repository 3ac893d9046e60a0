"""When the bot answers a message, and what the question is once its name is taken out."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from bot.core.events import TextMessage

ANSWERED_MSGTYPES = ("m.text",)


@dataclass(frozen=True)
class Situation:
    """What the conversation layer knows about a message's place, besides the message."""

    is_dm: bool
    mode: str  # "mention" or "all"
    replies_to_bot: bool
    in_bot_thread: bool


def mentions_bot(message: TextMessage, bot_id: str, display_name: str | None) -> bool:
    if message.mentioned_user_ids is not None and bot_id in message.mentioned_user_ids:
        return True
    if message.formatted_body and _pill_pattern(bot_id).search(message.formatted_body):
        return True
    if display_name and _addresses_by_name(message.body, display_name):
        return True
    # Some clients write the plain id in the body without m.mentions.
    return bot_id in message.body


def should_answer(message: TextMessage, situation: Situation, mentioned: bool) -> bool:
    if message.msgtype not in ANSWERED_MSGTYPES or message.is_edit:
        return False
    if not message.body.strip():
        return False
    return (
        situation.is_dm
        or situation.mode == "all"
        or mentioned
        or situation.replies_to_bot
        or situation.in_bot_thread
    )


def strip_bot_name(body: str, bot_id: str, display_name: str | None) -> str:
    """'Lucie: what is X?' asks 'what is X?'."""
    names = [re.escape(bot_id)]  # the full id first, or its localpart would match alone
    if display_name:
        names.append("@?" + re.escape(display_name))
    leading = re.compile(
        r"^\s*(?:" + "|".join(names) + rf")\s*[{ADDRESS_PUNCTUATION}]?\s*", re.IGNORECASE
    )
    stripped = leading.sub("", body, count=1)
    return stripped if stripped.strip() else body


def _pill_pattern(bot_id: str) -> re.Pattern[str]:
    encoded = re.escape(urllib.parse.quote(bot_id, safe=""))
    plain = re.escape(bot_id)
    return re.compile(rf"https://matrix\.to/#/(?:{plain}|{encoded})", re.IGNORECASE)


# "Lucie" is a common first name: the name alone addresses the bot only as a salutation (at the
# start, followed by punctuation: "Lucie, …", "Lucie : …") or written as an old client's
# plain-text mention ("@Lucie"). "J'ai vu Lucie hier" is about someone, not to the bot.
ADDRESS_PUNCTUATION = ",:;!?.\u2014\u2013"  # includes em and en dashes
MAX_NAME_CHARS = 256


def _addresses_by_name(body: str, display_name: str) -> bool:
    name = display_name[:MAX_NAME_CHARS].casefold()
    if not name.strip():
        return False
    head = body.lstrip()[: len(name) + 8].casefold()
    if head.startswith(name) or head.startswith("@" + name):
        after = head[len(name) + (1 if head.startswith("@") else 0) :].lstrip()
        if after[:1] and after[0] in ADDRESS_PUNCTUATION:
            return True
        if head.startswith("@") and not after[:1].isalnum():
            return True
    return _at_mention(body, name)


def _at_mention(body: str, name: str) -> bool:
    """'@Lucie' anywhere, as a whole word."""
    folded = body.casefold()
    start = folded.find("@" + name)
    while start != -1:
        end = start + 1 + len(name)
        if end >= len(folded) or not folded[end].isalnum():
            return True
        start = folded.find("@" + name, end)
    return False
