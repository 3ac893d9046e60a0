"""Moderation categories and their names: Llama Guard 3's S1–S14, the bot's own, and those an
OpenAI-compatible /v1/moderations server names (kept as named, once made safe to show)."""

from __future__ import annotations

import re
from dataclasses import dataclass

PROMPT_INJECTION = "prompt_injection"  # the embedded rules' own category
UNAVAILABLE = "unavailable"  # moderation was down: the stance decided
UNKNOWN = "unknown"  # flagged, but under no category the bot knows
MAX_CODE_CHARS = 64  # as RuleSettings.category


@dataclass(frozen=True)
class Category:
    code: str
    en: str
    fr: str
    prompt: str  # as Llama Guard 3's own task prompt names it (the model was trained on these)


def _s(number: int, en: str, fr: str, prompt: str | None = None) -> Category:
    return Category(f"S{number}", en, fr, prompt or en)


# Names from the model card; the prompt names three of them more briefly.
LLAMA_GUARD: tuple[Category, ...] = (
    _s(1, "Violent Crimes", "Crimes violents"),
    _s(2, "Non-Violent Crimes", "Crimes non violents"),
    _s(3, "Sex-Related Crimes", "Crimes à caractère sexuel", "Sex Crimes"),
    _s(4, "Child Sexual Exploitation", "Exploitation sexuelle d'enfants", "Child Exploitation"),
    _s(5, "Defamation", "Diffamation"),
    _s(6, "Specialized Advice", "Conseils spécialisés"),
    _s(7, "Privacy", "Vie privée"),
    _s(8, "Intellectual Property", "Propriété intellectuelle"),
    _s(9, "Indiscriminate Weapons", "Armes à effets indiscriminés"),
    _s(10, "Hate", "Haine"),
    _s(11, "Suicide & Self-Harm", "Suicide et automutilation", "Self-Harm"),
    _s(12, "Sexual Content", "Contenu sexuel"),
    _s(13, "Elections", "Élections"),
    _s(14, "Code Interpreter Abuse", "Détournement d'interpréteur de code"),
)
LLAMA_GUARD_CODES = frozenset(category.code for category in LLAMA_GUARD)

_OWN: tuple[Category, ...] = (
    Category(PROMPT_INJECTION, "Prompt injection", "Injection d'instructions", ""),
    Category(UNAVAILABLE, "Moderation unavailable", "Modération indisponible", ""),
    Category(UNKNOWN, "Unknown category", "Catégorie inconnue", ""),
)
_BY_CODE = {category.code: category for category in (*LLAMA_GUARD, *_OWN)}

# What OpenAI's moderation models name (omni-moderation and text-moderation): shown as named.
OPENAI_CODES = frozenset(
    {
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
    }
)
# Every category the bot knows without being told: the rest come from a server or the operators.
KNOWN_CODES = frozenset(_BY_CODE) | OPENAI_CODES
# one character class, repeated: linear time
_UNSAFE = re.compile(r"[^A-Za-z0-9/_-]+")


def llama_guard_policy() -> str:
    """The category lines of Llama Guard 3's task prompt, one per category."""
    return "\n".join(f"{category.code}: {category.prompt}." for category in LLAMA_GUARD)


def clean_code(code: str) -> str:
    """A category as named by a server, safe to store, to label and to show in Markdown: a
    known code as it is; any other name cut to 64 characters of ASCII letters, digits, "/", "_"
    and "-" (any run of other characters becomes one "_"); "unknown" when nothing is left."""
    if code in KNOWN_CODES:
        return code
    # no brackets, parentheses, "<", "&" or ":" (no link, entity or markup of any kind), no
    # control, format or line-separator characters, and no "." (no bare domain a client would
    # turn into a link)
    cleaned = _UNSAFE.sub("_", code[: MAX_CODE_CHARS * 4]).strip("_")
    return cleaned[:MAX_CODE_CHARS].rstrip("_") or UNKNOWN


def category_name(code: str, lang: str) -> str:
    """A category as people read it: "S1 (Crimes violents)" for one the bot knows (French
    unless lang is "en", as bot.texts), the code itself, made safe to show, for others."""
    category = _BY_CODE.get(code)
    if category is None:
        return clean_code(code)
    return f"{category.code} ({category.en if lang == 'en' else category.fr})"
