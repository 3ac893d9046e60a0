"""`lucie-bot` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from bot.cli_kb import add_kb_parser, run_kb
from bot.config import Settings, load_settings
from bot.errors import LucieError, TransientError
from bot.export import EXPORT_FORMATS, HF_FORMAT, MAX_JOBS, default_jobs
from bot.logs import configure_logging


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lucie-bot: {message}\n")


def _jobs(value: str) -> int:
    jobs = int(value) if value.isdigit() else 0
    if not 1 <= jobs <= 64:
        raise argparse.ArgumentTypeError("a number of processes from 1 to 64")
    return jobs


def _date(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {value!r} (use YYYY-MM-DD)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lucie-bot",
        description="Matrix bot for a self-hosted language model (Twake Chat, Tchap).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="connect to the homeserver and answer in rooms")
    run.add_argument(
        "--config", type=Path, help="TOML configuration file (LUCIE_BOT_* variables override it)"
    )
    check = commands.add_parser("check-config", help="validate the configuration and exit")
    check.add_argument("--config", type=Path)
    demo = commands.add_parser(
        "demo", help="a local homeserver, a small real model and the bot, with a terminal chat"
    )
    demo.add_argument("--data", type=Path, default=Path("demo-data"), help="the demo's folder")
    demo.add_argument("--synapse-port", type=int, default=8008)
    demo.add_argument("--model-port", type=int, default=8080)
    demo.add_argument("--ops-port", type=int, default=9108)
    demo.add_argument("--embeddings-port", type=int, default=8090)
    demo.add_argument("--gguf", type=Path, help="another GGUF model file to serve")
    demo.add_argument("--model-url", help="use this running OpenAI-compatible server instead")
    demo.add_argument("--no-chat", action="store_true", help="no terminal chat: use any client")
    device = commands.add_parser(
        "new-device",
        help="retire a lost or damaged encryption store; the next start makes a new signed device",
    )
    device.add_argument("--config", type=Path)
    identity = commands.add_parser(
        "new-identity", help="replace the bot's cross-signing keys (lost or taken over)"
    )
    identity.add_argument("--config", type=Path)
    export = commands.add_parser(
        "export", help="write consented training data as JSONL, or as a Hugging Face dataset"
    )
    export.add_argument("--config", type=Path)
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument(
        "--out", required=True, type=Path, help="a new file; with --format hf, a new folder"
    )
    export.add_argument("--since", type=_date, default=0, help="only questions from this date")
    export.add_argument("--room", help="only this room id")
    export.add_argument(
        "--jobs",
        type=_jobs,
        default=default_jobs(),
        help=f"processes writing a JSONL export (default: the cores, at most {MAX_JOBS})",
    )
    report = commands.add_parser(
        "report", help="write an HTML page of aggregate figures and plots (answers, votes)"
    )
    report.add_argument("--config", type=Path)
    report.add_argument("--out", required=True, type=Path, help="the HTML file to write")
    report.add_argument("--since", type=_date, default=0, help="only answers from this date")
    report.add_argument("--room", help="only this room id")
    add_kb_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Every error of the bot's own (bot.errors) is one line and an exit code, never a
    traceback; anything else is a bug and shows as one."""
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # a newcomer typing the bare command gets the commands, not an error
        return 2
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except LucieError as exc:
        kind = "temporarily unavailable: " if isinstance(exc, TransientError) else ""
        print(f"lucie-bot: {kind}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C in a command (an export, kb add): stopped, not a bug
        print("lucie-bot: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args)
    settings = load_settings(args.config)
    if args.command == "check-config":
        print(f"configuration ok: {settings.matrix.user_id} on {settings.matrix.homeserver}")
        return 0
    if args.command == "export":
        return _export(settings, args)
    if args.command == "report":
        return _report(settings, args)
    if args.command == "kb":
        return run_kb(settings, args)
    if args.command in ("new-device", "new-identity"):
        return _maintenance(settings, args.command)
    configure_logging(settings)
    from bot.app import run_bot

    asyncio.run(run_bot(settings))
    return 0


def _maintenance(settings: Settings, command: str) -> int:
    from bot.matrix.maintenance import new_device, new_identity

    action = new_device if command == "new-device" else new_identity
    print("\n".join(asyncio.run(action(settings))))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bot.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        folder=args.data.resolve(),
        synapse_port=args.synapse_port,
        model_port=args.model_port,
        ops_port=args.ops_port,
        embeddings_port=args.embeddings_port,
        gguf=args.gguf,
        model_url=args.model_url,
        chat=not args.no_chat,
    )
    asyncio.run(run_demo(options))
    return 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from bot.export.shards import export_jsonl
    from bot.export.writer import ExportRequest, progress_stream

    request = ExportRequest(args.format, args.out, args.since, args.room)
    if args.format == HF_FORMAT:  # pyarrow is loaded only here
        from bot.export.hf import export_dataset

        count = asyncio.run(export_dataset(settings, request, progress_stream()))
    else:
        count = asyncio.run(export_jsonl(settings, request, progress_stream(), args.jobs))
    if progress_stream() is None:
        print(f"{count} rows written to {args.out}")
    return 0


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from bot.report.command import ReportRequest, report

    asyncio.run(report(settings, ReportRequest(args.out, args.since, args.room)))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
