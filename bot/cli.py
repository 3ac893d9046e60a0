"""`lucie-bot` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bot.config import ConfigError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lucie-bot",
        description="Matrix bot for a self-hosted language model (Twake Chat, Tchap).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="connect to the homeserver and answer in rooms")
    run.add_argument(
        "--config", type=Path, help="TOML configuration file (LUCIE_BOT_* variables override it)"
    )
    check = commands.add_parser("check-config", help="validate the configuration and exit")
    check.add_argument("--config", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"lucie-bot: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"configuration ok: {settings.matrix.user_id} on {settings.matrix.homeserver}")
        return 0
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # nio logs event contents when verbose: quiet unless content logging is asked for
    if not settings.log_content:
        logging.getLogger("nio").setLevel(logging.WARNING)
    for chatty in ("markdown_it", "aiosqlite", "peewee", "httpcore", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    from bot.app import run_bot
    from bot.matrix.transport import LoginFailed

    try:
        asyncio.run(run_bot(settings))
    except LoginFailed as exc:
        print(f"lucie-bot: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"lucie-bot: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
