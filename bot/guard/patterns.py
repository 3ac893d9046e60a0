"""Operators' patterns, compiled by RE2: matching stays linear in the text whatever the pattern,
where Python's re can backtrack for ever on a hostile text."""

from __future__ import annotations

from typing import Any

import re2


def compile_pattern(pattern: str) -> Any:
    """The compiled pattern; ValueError naming it when RE2 cannot read it (RE2's own logging
    to stderr is off: a bad configuration is reported in one line)."""
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)  # fmt: skip
        raise ValueError(f"pattern {pattern!r} is not valid RE2: {reason}") from None
