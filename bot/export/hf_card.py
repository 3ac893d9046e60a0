"""The dataset card (README.md) of the hf export: YAML front matter that `datasets` and the hub
read (configs, row counts, licence, languages), and what the rows are and how they were made.

Only aggregate figures, counted while the rows stream past (Tally): never a text, an id or a
hash of a person. The YAML is written by hand, every string double-quoted as JSON (a subset of
YAML's double-quoted scalars), so the bot needs no YAML library.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.export import FORMATS

# data.licence as the hub's identifiers; any other licence is declared as `other`, by name
HUB_LICENCES = frozenset(
    {"apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
     "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "cc-by-3.0", "cc-by-sa-3.0", "etalab-2.0", "odc-by",
     "odbl", "pddl", "openrail", "other"}
)  # fmt: skip
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
WHAT = {
    "sft": "`messages`: conversations whose answer has net positive votes, and people's "
    "corrections as answers (TRL conversational SFT)",
    "kto": "`prompt`, `completion`, `label`: every voted answer, label true when net positive "
    "(TRL KTO)",
    "dpo": "`prompt`, `chosen`, `rejected`: a correction against the answer it corrects, and "
    "regenerations of one question ranked by votes (TRL DPO)",
    "oasst": "OpenAssistant message trees, one per question; `prompt` is the tree as JSON text",
    "openwebui": "Open WebUI rating records, one per vote, with a snapshot of the chat",
    "refusal": "`prompt`, `completion`, `label`, `categories`, `stage`: each refused question "
    "or replaced answer, with the refusal shown (never the flagged text): safety examples, "
    "kept out of the other configs",
}


@dataclass
class Tally:
    """What the card says about the rows, counted as they are written (constant memory: one
    counter per config, model, prompt version and language)."""

    rows: Counter[str] = field(default_factory=Counter)
    num_bytes: Counter[str] = field(default_factory=Counter)  # in Arrow, as `datasets` counts
    file_bytes: Counter[str] = field(default_factory=Counter)  # in Parquet: what is downloaded
    languages: Counter[str] = field(default_factory=Counter)
    models: Counter[tuple[str, str]] = field(default_factory=Counter)
    prompt_versions: Counter[tuple[int, str]] = field(default_factory=Counter)
    sources: Counter[tuple[str, str]] = field(default_factory=Counter)
    notice_versions: set[int] = field(default_factory=set)
    prompts: set[str] = field(default_factory=set)  # texts' SHA-256: how many distinct
    policies: set[str] = field(default_factory=set)
    first: str | None = None
    last: str | None = None

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def add(self, config: str, row: dict[str, Any]) -> None:
        meta = row["metadata"]
        self.rows[config] += 1
        self.languages[meta["language"]] += 1
        self.models[(meta["model"] or "unknown", config)] += 1
        self.prompt_versions[(meta["prompt_version"], config)] += 1
        self.sources[(meta["source"], config)] += 1
        self.notice_versions.update(meta["consent"]["notice_versions"])
        self.prompts.add(meta["prompt_sha256"])
        if meta["policy_sha256"]:
            self.policies.add(meta["policy_sha256"])
        moment = meta["created_at"]  # ISO 8601 in UTC: ordered as text
        self.first = moment if self.first is None else min(self.first, moment)
        self.last = moment if self.last is None else max(self.last, moment)


@dataclass(frozen=True)
class CardContext:
    licence: str
    collection: str
    notice_version: int
    default_lang: str
    bot_name: str | None
    scrubbed: bool
    since_ms: int
    one_room: bool
    exported_at: datetime


def card(tally: Tally, context: CardContext, files: dict[str, str]) -> str:
    return f"---\n{_front_matter(tally, context, files)}---\n\n{_body(tally, context)}"


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's are a subset) of a cleaned string."""
    return json.dumps(_clean(value), ensure_ascii=False)


# what a name from the database or the configuration loses on the card: line breaks and
# controls (U+0085, U+2028 and U+2029 included) become spaces, as they would end a table row
# or the title and PyYAML refuses most of them in a stream; invisible characters (format,
# surrogates, private use, unassigned: U+FFFE too, which PyYAML refuses) go
_SPACES = frozenset({"Cc", "Zl", "Zp", "Zs"})
_GONE = frozenset({"Cf", "Cs", "Co", "Cn"})
# Markdown's inline specials, and the backslash that escapes them; "<", ">" and "&" are left to
# html.escape (a backslash before the entity it makes would show the entity's name)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!|~^])")


def _clean(text: str) -> str:
    """Printable text on one line."""
    kept = []
    for char in text:
        if not char.isprintable() or char.isspace():
            category = unicodedata.category(char)
            if category in _GONE:
                continue
            if category in _SPACES:
                char = " "
        kept.append(char)
    return " ".join("".join(kept).split())


def _text(text: str) -> str:
    """A name from the database or the configuration (a model's, a licence, the bot's) as
    Markdown text: cleaned, its Markdown specials backslash-escaped and its HTML escaped, so
    that it can make no image, link, tag or table cell of its own on the rendered card."""
    return html.escape(_MARKDOWN.sub(r"\\\1", _clean(text)), quote=False)


def _front_matter(tally: Tally, context: CardContext, files: dict[str, str]) -> str:
    licence = context.licence.strip().lower()
    lines = [f"pretty_name: {_q(_title(context))}"]
    if licence in HUB_LICENCES:
        lines.append(f"license: {_q(licence)}")
    else:
        lines += ["license: other", f"license_name: {_q(context.licence)}"]
    languages = sorted(tally.languages) or [context.default_lang]
    lines += ["language:", *(f"- {_q(lang)}" for lang in languages)]
    lines += ["task_categories:", "- text-generation"]
    lines += ["tags:", *(f"- {tag}" for tag in ("human-feedback", "sft", "dpo", "kto", "chat"))]
    largest = max(tally.rows.values(), default=0)
    size = next((label for bound, label in SIZES if largest < bound), "n>1M")
    lines += ["size_categories:", f"- {_q(size)}", "configs:" if files else "configs: []"]
    for name, path in files.items():
        lines += [f"- config_name: {_q(name)}"]
        if name == "sft":  # what load_dataset(DIR) loads without a config name
            lines.append("  default: true")
        lines += ["  data_files:", '  - split: "train"', f"    path: {_q(path)}"]
    lines.append("dataset_info:" if files else "dataset_info: []")
    for name in files:
        lines += [
            f"- config_name: {_q(name)}",
            "  splits:",
            '  - name: "train"',
            f"    num_bytes: {tally.num_bytes[name]}",
            f"    num_examples: {tally.rows[name]}",
            f"  download_size: {tally.file_bytes[name]}",
            f"  dataset_size: {tally.num_bytes[name]}",
        ]
    return "\n".join(lines) + "\n"


def _title(context: CardContext) -> str:
    return f"{_clean(context.bot_name or '') or 'lucie-bot'}: consented conversations and feedback"


def _body(tally: Tally, context: CardContext) -> str:
    sections = [
        f"# {_text(_title(context))}",
        "Questions people asked a language model in Matrix rooms (through lucie-bot), its "
        "answers, and what people said of them: 👍/👎 votes, corrections, regenerations, "
        "and the refusals shown. One config per training format, each a `train` split (a "
        "format without rows in this export has no config):",
        _table(
            ["config", "rows", "what a row is"], [[n, str(tally.rows[n]), WHAT[n]] for n in FORMATS]
        ),
        "```python\nfrom datasets import load_dataset\n\n"
        'kto = load_dataset("path/or/hub-id", "kto", split="train")\n```\n\n'
        "`metadata.sampling` (and the oasst `prompt` tree) are JSON text: `json.loads` them.",
        _consent(tally, context),
        _pseudonyms(context),
        _provenance(tally),
        _made(context),
    ]
    return "\n\n".join(sections) + "\n"


def _consent(tally: Tally, context: CardContext) -> str:
    recorded = ", ".join(str(v) for v in sorted(tally.notice_versions)) or "none"
    if context.collection == "opt_in":
        how = (
            "Collection is **opt-in**: a room shows a consent notice, and a person's words "
            "are used only once they agreed to it (`!lucie consent yes`). An answer is "
            "exported only if everyone whose words are in its context consented to the "
            "notice in force; votes, labels and corrections count only from people who "
            "consented, once per person and answer."
        )
    else:
        how = f"Collection mode: {_text(context.collection)}."
    return (
        "## Consent\n\n"
        f"{how} Withdrawing (`!lucie consent no`) or `!lucie forget me` keeps a person out of "
        "later exports; answers made while a room had collection off are never exported.\n\n"
        f"- notice in force: version {context.notice_version}\n"
        f"- notice versions the exported rows' people consented to: {recorded}"
    )


def _pseudonyms(context: CardContext) -> str:
    scrubbed = (
        "E-mail addresses, phone numbers, Matrix ids and URLs are replaced by placeholders "
        "(`<EMAIL>`, `<PHONE>`, `<MATRIX_ID>`, `<URL>`)."
        if context.scrubbed
        else "Contact details other than those masked when stored are left as written "
        "(`data.scrub` was off)."
    )
    return (
        "## Pseudonymisation\n\n"
        "Every id in the rows (conversations, messages, authors, raters) is a keyed hash "
        "(HMAC-SHA-256) with the operator's secret: stable across exports, so rows of one "
        "conversation or person can be grouped, but not reversible without that secret, which "
        "is not published. People's names (display names, their parts, and the names user ids "
        "are made of) are replaced by `<NAME>`; personal identifiers (social security numbers, "
        "IBANs, phone numbers, e-mail and postal addresses) are masked (`[IBAN]`, `[PHONE]`…) "
        f"when stored and again when exported. {scrubbed}"
        " The texts are otherwise as written: review them before publishing."
    )


def _provenance(tally: Tally) -> str:
    first = (tally.first or "")[:10] or "no rows"
    last = (tally.last or "")[:10] or "no rows"
    languages = ", ".join(
        f"{_text(lang)} ({n} rows)" for lang, n in sorted(tally.languages.items())
    )
    return (
        "## Provenance\n\n"
        f"- answers dated from {first} to {last} (UTC)\n"
        f"- languages (rows over all configs): {languages or 'none'}\n"
        f"- distinct system prompts: {len(tally.prompts)}; distinct operators' policies, which "
        f"the exported system message starts with: {len(tally.policies)}\n\n"
        "Rows per model:\n\n"
        + _by_config("model", tally.models)
        + "\n\nRows per prompt version (0 is the default prompt; other numbers count a room's "
        "successive prompts, so one number in two rooms is two prompts):\n\n"
        + _by_config("prompt version", tally.prompt_versions)
        + "\n\nRows per kind of feedback:\n\n"
        + _by_config("source", tally.sources)
    )


def _by_config(label: str, counts: Mapping[tuple[Any, str], int]) -> str:
    """One row per model (prompt version, source), one column per config."""
    rows = []
    for value in sorted({pair[0] for pair in counts}):
        rows.append([_text(str(value)), *(str(counts[(value, name)]) for name in FORMATS)])
    return _table([label, *FORMATS], rows) if rows else "(none)"


def _made(context: CardContext) -> str:
    command = "lucie-bot export --format hf --out DIR"
    if context.since_ms:
        since = datetime.fromtimestamp(context.since_ms / 1000, UTC).date().isoformat()
        command += f" --since {since}"
    if context.one_room:
        command += " --room ROOM"  # the room's id stays out of the card: it names a room
    return (
        "## How it was made\n\n"
        f"`{command}`, on {context.exported_at.isoformat(timespec='seconds')}. Licence: "
        f"{_text(context.licence)}. Nothing is uploaded by the bot: publishing is the "
        "operator's step."
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """The card's own words, or a name already made _text, on one line."""
    return " ".join(text.split())
