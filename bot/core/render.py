"""Answer text to Matrix event contents: Markdown rendered to the HTML subset clients accept."""

from __future__ import annotations

from typing import Any

import nh3
from markdown_it import MarkdownIt

# The Matrix spec's recommended allow-list for org.matrix.custom.html.
ALLOWED_TAGS = {
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "target"},
    "img": {"src", "alt", "title", "width", "height"},
    "code": {"class"},
    "ol": {"start"},
    "span": {"data-mx-spoiler"},
}
URL_SCHEMES = {"http", "https", "ftp", "mailto", "magnet", "mxc"}
LIVE_MARKER = "org.matrix.msc4357.live"

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
    ["table", "strikethrough"]
)


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute == "src" and not value.startswith("mxc://"):
        return None
    if tag == "a" and attribute == "href" and value.startswith("mxc://"):
        return None
    if tag == "code" and attribute == "class":
        return value if value.startswith("language-") and " " not in value else None
    return value


def to_html(markdown_text: str) -> str:
    return sanitise(_markdown.render(markdown_text))


def sanitise(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        attribute_filter=_attribute_filter,
        link_rel=None,
    ).strip()


def _relation(reply_to: str, thread_root: str | None) -> dict[str, Any]:
    if thread_root:
        return {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": False,
            "m.in_reply_to": {"event_id": reply_to},
        }
    return {"m.in_reply_to": {"event_id": reply_to}}


def message_content(
    text: str,
    msgtype: str = "m.text",
    reply_to: str | None = None,
    thread_root: str | None = None,
    mention: str | None = None,
    live: bool = False,
) -> dict[str, Any]:
    """A new message; body stays readable Markdown because some clients show only the body."""
    content: dict[str, Any] = {
        "msgtype": msgtype,
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": to_html(text),
        "m.mentions": {"user_ids": [mention]} if mention else {},
    }
    if reply_to:
        content["m.relates_to"] = _relation(reply_to, thread_root)
    if live:
        content[LIVE_MARKER] = {}
    return content


def edit_content(
    original_event_id: str, text: str, mention: str | None = None, live: bool = False
) -> dict[str, Any]:
    new_content = message_content(text, mention=mention, live=live)
    return {
        "msgtype": "m.text",
        "body": f"* {text}",
        "format": "org.matrix.custom.html",
        "formatted_body": f"* {new_content['formatted_body']}",
        # edits never notify: nobody newly mentioned at the top level
        "m.mentions": {},
        "m.new_content": new_content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": original_event_id},
    }
