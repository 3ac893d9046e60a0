"""The bot's own errors, under one root.

- `OperatorError`: something the person running the bot must fix (configuration, a damaged or
  newer database, a refused login, a port taken). Its message is one line; the CLI prints it
  and exits with `exit_code`, never with a traceback.
- `TransientError`: a condition that passes by itself (a locked database, a model server or
  homeserver that is down or busy). The bot waits or retries and people get a short notice; at
  the CLI (a database locked at start) it is still one line, with exit code 75 (EX_TEMPFAIL),
  so a supervisor knows to try again.

Anything else that escapes is a bug, and is shown as one.
"""

from __future__ import annotations


class LucieError(Exception):
    exit_code = 1


class OperatorError(LucieError):
    """One line for the operator: what is wrong and, where possible, how to fix it."""


class UsageError(OperatorError):
    """Bad configuration or arguments."""

    exit_code = 2


class TransientError(LucieError):
    """Passes by itself; worth retrying later."""

    exit_code = 75
