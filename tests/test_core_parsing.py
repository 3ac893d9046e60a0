"""Pure core logic: parsing hostile events, triggers, votes, admin rights, rendering."""

from __future__ import annotations

import pytest

from bot.core.events import parse_message, parse_reaction, parse_redaction, strip_reply_fallback
from bot.core.governance import (
    creators_are_privileged,
    inviter_allowed,
    is_room_admin,
    may_change_power_levels,
    normalise_vote,
)
from bot.core.ports import RoomAuthority
from bot.core.render import edit_content, message_content, sanitise, to_html
from bot.core.triggers import Situation, mentions_bot, should_answer, strip_bot_name

BOT = "@lucie:example.org"


def event(content, **extra):
    return {
        "type": "m.room.message",
        "event_id": "$e",
        "sender": "@a:example.org",
        "origin_server_ts": 1,
        "content": content,
        **extra,
    }


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"type": "m.room.message"},
        event(None),
        event({"msgtype": "m.text"}),
        event({"msgtype": "m.text", "body": 42}),
        event({"msgtype": "m.text", "body": "x", "m.relates_to": "nonsense"}),
        event({"msgtype": "m.text", "body": "x", "m.mentions": {"user_ids": "not a list"}}),
        {**event({"msgtype": "m.text", "body": "x"}), "origin_server_ts": "yesterday"},
        {**event({"msgtype": "m.text", "body": "x"}), "sender": None},
        event({"msgtype": None, "body": "x"}),
    ],
)
def test_hostile_messages_are_dropped_or_parsed_safely(raw):
    parsed = parse_message("!r", raw)
    assert parsed is None or parsed.body == "x"


def test_message_fields_and_fallback_stripping():
    raw = event(
        {
            "msgtype": "m.text",
            "body": "> <@b:x> earlier\n> more\n\nthe reply",
            "format": "org.matrix.custom.html",
            "formatted_body": "<mx-reply><blockquote>earlier</blockquote></mx-reply>the reply",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
            "m.mentions": {"user_ids": [BOT, 7]},
        }
    )
    message = parse_message("!r", raw)
    assert message.body == "the reply"
    assert message.formatted_body == "the reply"
    assert message.reply_to == "$q" and message.thread_root is None
    assert message.mentioned_user_ids == (BOT,)
    assert strip_reply_fallback("> not a reply") == ""
    assert strip_reply_fallback("plain\n> quote") == "plain\n> quote"


def test_thread_fallback_reply_is_not_a_reply_and_edits_are_flagged():
    thread = parse_message(
        "!r",
        event(
            {
                "msgtype": "m.text",
                "body": "t",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": "$root",
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": "$last"},
                },
            }
        ),
    )
    assert thread.thread_root == "$root" and thread.reply_to is None
    edit = parse_message(
        "!r",
        event(
            {
                "msgtype": "m.text",
                "body": "* x",
                "m.new_content": {},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$o"},
            }
        ),
    )
    assert edit.is_edit


def test_reactions_and_redactions_parse_defensively():
    good = {
        "type": "m.reaction",
        "event_id": "$r",
        "sender": "@a:x",
        "origin_server_ts": 5,
        "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$t", "key": "👍"}},
    }
    assert parse_reaction("!r", good).target == "$t"
    assert parse_reaction("!r", {**good, "content": {"m.relates_to": []}}) is None
    assert parse_reaction("!r", {**good, "content": None}) is None
    v11 = {
        "type": "m.room.redaction",
        "event_id": "$x",
        "sender": "@a:x",
        "content": {"redacts": "$r"},
    }
    assert parse_redaction("!r", v11).redacts == "$r"
    assert parse_redaction("!r", {**v11, "redacts": "$old"}).redacts == "$old"
    assert parse_redaction("!r", {"type": "m.room.redaction", "content": {}}) is None


def msg(body, mentions=None, formatted=None, msgtype="m.text"):
    content = {"msgtype": msgtype, "body": body}
    if mentions is not None:
        content["m.mentions"] = {"user_ids": mentions}
    if formatted:
        content.update(format="org.matrix.custom.html", formatted_body=formatted)
    return parse_message("!r", event(content))


def test_mentions_by_intentional_mention_pill_display_name_or_id():
    assert mentions_bot(msg("hi", mentions=[BOT]), BOT, "Lucie")
    pill = '<a href="https://matrix.to/#/%40lucie%3Aexample.org">Lucie</a> hi'
    assert mentions_bot(msg("Lucie hi", formatted=pill), BOT, None)
    assert mentions_bot(msg("lucie, une question"), BOT, "Lucie")
    assert not mentions_bot(msg("Lucienne est là"), BOT, "Lucie")
    assert not mentions_bot(msg("hello", mentions=[]), BOT, "Lucie")
    assert mentions_bot(msg(f"{BOT} ça va"), BOT, None)


def test_should_answer_rules():
    group = Situation(is_dm=False, mode="mention", replies_to_bot=False, in_bot_thread=False)
    assert not should_answer(msg("hello"), group, mentioned=False)
    assert should_answer(msg("hello"), group, mentioned=True)
    assert should_answer(msg("hello"), Situation(True, "mention", False, False), False)
    assert should_answer(msg("hello"), Situation(False, "all", False, False), False)
    assert should_answer(msg("hello"), Situation(False, "mention", True, False), False)
    assert should_answer(msg("hello"), Situation(False, "mention", False, True), False)
    assert not should_answer(msg("hello", msgtype="m.notice"), Situation(True, "all", 0, 0), 1)
    assert not should_answer(msg("   "), Situation(True, "all", False, False), True)


def test_strip_bot_name():
    assert strip_bot_name("Lucie, quelle heure ?", BOT, "Lucie") == "quelle heure ?"
    assert strip_bot_name(f"{BOT}: quelle heure ?", BOT, "Lucie") == "quelle heure ?"
    assert strip_bot_name("@Lucie quelle heure ?", BOT, "Lucie") == "quelle heure ?"
    assert strip_bot_name("Lucie", BOT, "Lucie") == "Lucie"  # never empty


def test_inviters_match_user_globs_and_servers():
    patterns = ["@*:agent.*.tchap.gouv.fr", "example.org"]
    assert inviter_allowed(
        "@jean.dupont-interieur.gouv.fr:agent.interieur.tchap.gouv.fr", patterns, []
    )
    assert inviter_allowed("@bob:example.org", patterns, [])
    assert not inviter_allowed("@bob:evil.org", patterns, [])
    assert not inviter_allowed("@bob:example.org.evil.org", patterns, [])
    assert inviter_allowed("@ops:elsewhere", [], ["@ops:elsewhere"])


def test_room_admins_in_tchap_and_twake_levels():
    tchap = {
        "users": {"@admin:t": 100, "@mod:t": 50},
        "users_default": 0,
        "state_default": 100,
        "events": {},
    }
    assert may_change_power_levels(tchap, "@admin:t")
    assert not may_change_power_levels(tchap, "@mod:t")
    assert not may_change_power_levels(tchap, "@nobody:t")
    twake = {
        "users": {"@admin:w": 80, "@owner:w": 90, "@member:w": 10},
        "state_default": 50,
        "events": {"m.room.power_levels": 80},
    }
    assert may_change_power_levels(twake, "@admin:w") and may_change_power_levels(twake, "@owner:w")
    assert not may_change_power_levels(twake, "@member:w")
    assert not may_change_power_levels({"users": "junk", "users_default": True}, "@x:y")
    v12 = RoomAuthority({"users": {}}, frozenset({"@creator:x"}))
    assert is_room_admin(v12, "@creator:x") and not is_room_admin(v12, "@other:x")
    assert creators_are_privileged("12") and not creators_are_privileged("11")
    assert not creators_are_privileged("org.example.custom")


@pytest.mark.parametrize("key", ["👍", "👍\ufe0f", "👍🏽", "👍🏿\ufe0f", "+1"])
def test_thumbs_up_variants(key):
    assert normalise_vote(key) == "up"


def test_other_votes():
    assert normalise_vote("👎🏻") == "down"
    assert normalise_vote("🎉") is None and normalise_vote("") is None


def test_html_is_sanitised_to_the_matrix_allow_list():
    html = to_html("**gras** [lien](javascript:alert(1)) <script>x</script> ![i](https://x/i.png)")
    assert "<strong>gras</strong>" in html
    assert "href" not in html and "<script" not in html  # the link stays inert text
    assert "&lt;a href" in to_html('<a href="javascript:alert(1)">x</a>')  # raw HTML escaped
    assert sanitise('<a href="javascript:alert(1)">x</a>') == "<a>x</a>"
    assert sanitise('<a href="mxc://s/m">x</a>') == "<a>x</a>"
    assert (
        sanitise('<img src="https://t.co/p.png"><img src="mxc://s/m">')
        == '<img><img src="mxc://s/m">'
    )
    assert sanitise('<font color="red"><b onclick="x()">b</b></font>') == "<b>b</b>"
    assert "<img" not in html or "https://x" not in html  # img only from mxc://
    assert 'src="mxc://s/m"' in to_html("![i](mxc://s/m)")
    assert '<code class="language-python">' in to_html("```python\nx = 1\n```")
    assert "<table>" in to_html("| a | b |\n|---|---|\n| 1 | 2 |")


def test_reply_and_edit_contents():
    content = message_content("ok", reply_to="$q", thread_root="$root", mention="@a:x", live=True)
    assert content["m.relates_to"]["rel_type"] == "m.thread"
    assert content["m.relates_to"]["m.in_reply_to"] == {"event_id": "$q"}
    assert content["m.mentions"] == {"user_ids": ["@a:x"]}
    assert "org.matrix.msc4357.live" in content
    edit = edit_content("$a", "final", mention="@a:x")
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$a"}
    assert edit["m.mentions"] == {} and edit["body"] == "* final"
    assert "org.matrix.msc4357.live" not in edit["m.new_content"]
    assert message_content("n", "m.notice")["m.mentions"] == {}


def _unbounded_wildcards(pattern: str) -> bool:
    """A '.' repeated without bound: on a tag that never closes, the engine tries every start
    and scans to the end from each one, so its cost grows with the square of the length."""
    return any(wildcard in pattern for wildcard in (".*", ".+", r"[\s\S]*", r"[^<]*"))


def test_reply_fallback_stripping_is_linear_on_hostile_bodies():
    import re

    import bot.core.events as events

    # no backtracking pattern runs on what a room member writes
    patterns = [v for v in vars(events).values() if isinstance(v, re.Pattern)]
    assert not [p.pattern for p in patterns if _unbounded_wildcards(p.pattern)]

    # 65 kB of reply tags that never close: left as they are (cut to the bound), not stripped
    unclosed = "<mx-reply>" * 6_500 + "la question"
    reply = {"m.in_reply_to": {"event_id": "$q"}}
    content = {"msgtype": "m.text", "body": "x", "formatted_body": unclosed, "m.relates_to": reply}
    parsed = parse_message("!r", event(content))
    assert parsed.formatted_body == unclosed[: events.MAX_BODY_CHARS]

    # thousands of openings, one close: everything up to it goes, as the old pattern did
    closed = "<MX-REPLY>" * 6_000 + "<blockquote>citée</blockquote></Mx-Reply>la <b>question</b>"
    parsed = parse_message("!r", event({**content, "formatted_body": closed}))
    assert parsed.formatted_body == "la <b>question</b>"

    # several fallbacks in a row, text between them kept; an unclosed last one left alone
    several = "<mx-reply>a</mx-reply>un<mx-reply>b</mx-reply>deux<mx-reply>c"
    parsed = parse_message("!r", event({**content, "formatted_body": several}))
    assert parsed.formatted_body == "undeux<mx-reply>c"

    # a body larger than any homeserver sends is cut before anything scans it
    huge = "> q\n" * 40_000 + "\nla question"
    parsed = parse_message("!r", event({**content, "body": huge}))
    assert len(parsed.body) <= events.MAX_BODY_CHARS
