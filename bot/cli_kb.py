"""`lucie-bot kb`: operators' knowledge bases, collections of files indexed into the bot's
database for every room that uses them.

It works while the bot runs: both open the same SQLite file (WAL, busy timeout), a file is
searchable only once fully indexed, and the bot notices a changed collection at its next
question through the collection's generation stamp.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.errors import OperatorError, UsageError

if TYPE_CHECKING:
    from bot.rag.indexer import Indexer, IndexReport, Progress
    from bot.rag.ports import DocumentRow
    from bot.storage.store import Store

# `!lucie docs use NAME` reads its arguments in lower case: a collection must be nameable there
COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_FILES = 100_000  # one `kb add`; a bigger tree is more likely a mistake than a knowledge base
LISTED_IN_SUMMARY = 10  # refusals named in the summary line; the rest on lines of their own


def add_kb_parser(commands: argparse._SubParsersAction[Any]) -> None:
    kb = commands.add_parser("kb", help="operators' knowledge bases (collections of files)")
    # before or after the action: `kb --config F add …` and `kb add … --config F` both work
    kb.add_argument("--config", type=Path)
    actions = kb.add_subparsers(dest="kb_action", required=True, parser_class=type(kb))
    add = actions.add_parser("add", help="index files or folders (recursive) into a collection")
    add.add_argument("name", type=_collection_name, help="the collection (created if new)")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add.add_argument(
        "--exportable",
        action=argparse.BooleanOptionalAction,
        help="its passages may (or may not) be exported as the context of training rows; "
        "unsaid, a new collection is not exportable and an existing one keeps its choice",
    )
    listing = actions.add_parser("list", help="the collections, or one collection's documents")
    listing.add_argument("name", nargs="?", type=_collection_name)
    remove = actions.add_parser("remove", help="a whole collection, or one file or folder of it")
    remove.add_argument("name", type=_collection_name)
    remove.add_argument("path", nargs="?", type=Path)
    rebuild = actions.add_parser(
        "rebuild", help="index every file of a collection again (e.g. a new embeddings model)"
    )
    rebuild.add_argument("name", type=_collection_name)
    for action in (add, listing, remove, rebuild):
        action.add_argument("--config", type=Path, default=argparse.SUPPRESS)


def _collection_name(value: str) -> str:
    if not COLLECTION_NAME.match(value):
        raise argparse.ArgumentTypeError(
            f"bad collection name {value!r}: lower-case letters, digits, '.', '_' or '-', "
            "at most 64"
        )
    return value


def run_kb(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from bot import paths
    from bot.storage.store import Store

    store = await Store.open(paths.database(settings.data_dir))
    try:
        if args.kb_action == "list":
            print(await _list(store, args.name))
            return 0
        if args.kb_action == "remove":
            print(await _remove(store, args.name, args.path))
            return 0
        if args.kb_action == "add":
            tally = await add_to_collection(settings, store, args.name, args.paths, args.exportable)
        else:
            tally = await _rebuild(settings, store, args.name)
    finally:
        await store.close()
    if not tally.useful:
        raise OperatorError(tally.report())
    print(tally.report(), flush=True)
    return 0


@dataclass(frozen=True)
class Candidate:
    path: Path  # absolute, as recorded in the collection
    shown: str  # as the operator named it
    explicit: bool  # named on the command line, not met while walking a folder


@dataclass
class Tally:
    """What one `kb add` or `kb rebuild` did, file by file."""

    verb: str
    name: str
    indexed: int = 0
    passages: int = 0
    pages: int = 0
    unchanged: int = 0
    skipped: int = 0  # hidden files, and files of unknown types met in folders
    unembedded: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)

    def count(self, report: IndexReport, embedding: bool) -> None:
        if report.unchanged:
            self.unchanged += 1
            return
        self.indexed += 1
        self.passages += report.passages
        self.pages += report.pages or 0
        if embedding and not report.embedded:
            self.unembedded += 1

    @property
    def useful(self) -> bool:
        return self.indexed + self.unchanged > 0

    def summary(self) -> str:
        detail = f"{self.passages} {_plural(self.passages, 'passage')}"
        if self.pages:
            detail += f", {self.pages} {_plural(self.pages, 'page')}"
        parts = [f"{self.indexed} {_plural(self.indexed, 'file')} indexed ({detail})"]
        if self.unchanged:
            parts.append(f"{self.unchanged} unchanged")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.refused:
            named = [f"{shown}: {why}" for shown, why in self.refused[:LISTED_IN_SUMMARY]]
            more = len(self.refused) - LISTED_IN_SUMMARY
            parts.append(
                f"{len(self.refused)} refused ({'; '.join(named)}"
                + (f"; {more} more below)" if more > 0 else ")")
            )
        if self.unembedded:
            parts.append(
                f"{self.unembedded} not embedded (embeddings server failed: "
                f"`lucie-bot kb rebuild {self.name}` later)"
            )
        return f"kb {self.verb} {self.name}: " + ", ".join(parts)

    def report(self) -> str:
        extra = [f"  refused {shown}: {why}" for shown, why in self.refused[LISTED_IN_SUMMARY:]]
        return "\n".join([self.summary(), *extra])


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


async def add_to_collection(
    settings: Settings,
    store: Store,
    name: str,
    given: Sequence[Path],
    exportable: bool | None,
    progress: bool | None = None,
) -> Tally:
    """Index files and folders into the collection (the demo uses it for its user guide);
    `exportable` None keeps an existing collection's choice."""
    from bot.core.clock import now_ms

    tally = Tally("add", name)
    found = await asyncio.to_thread(_candidates, given, tally)
    if exportable is None:
        known = {row.name: row.exportable for row in await store.documents.collections()}
        exportable = known.get(name, False)
    await store.documents.ensure_collection(name, exportable, now_ms())
    await _index_each(settings, store, name, found, tally, progress, force=False)
    return tally


def _candidates(given: Sequence[Path], tally: Tally) -> list[Candidate]:
    found: list[Candidate] = []
    for path in given:
        if path.is_dir():
            found += _walk(path, tally, MAX_FILES - len(found))
        elif path.is_file():
            found.append(Candidate(path.resolve(), str(path), explicit=True))
        else:
            tally.refused.append((str(path), "not found"))
        if len(found) > MAX_FILES:
            raise UsageError(f"more than {MAX_FILES} files: add the folders one by one")
    return found


def _walk(folder: Path, tally: Tally, room: int) -> list[Candidate]:
    """Regular files under the folder, in a stable order; hidden ones and links skipped."""
    found: list[Candidate] = []
    for parent, folders, files in os.walk(folder, followlinks=False):
        hidden = [name for name in folders if name.startswith(".")]
        tally.skipped += len(hidden)
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = Path(parent) / name
            # a link may lead anywhere the operator's account can read: never followed
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                tally.skipped += 1
                continue
            found.append(Candidate(path.resolve(), str(path), explicit=False))
            if len(found) > room:
                return found
    return found


def _indexer(settings: Settings, store: Store) -> Indexer:
    from bot.rag.embeddings import OpenAIEmbedder
    from bot.rag.indexer import Indexer
    from bot.rag.prepare import Preparer

    embedder = OpenAIEmbedder(settings.rag) if settings.rag.embeddings_url else None
    return Indexer(store.documents, Preparer(settings.rag), embedder)


async def _index_each(
    settings: Settings,
    store: Store,
    name: str,
    found: Sequence[Candidate],
    tally: Tally,
    progress: bool | None,
    force: bool,
) -> None:
    from bot.rag.documents import BadDocument
    from bot.rag.indexer import Origin

    indexer = _indexer(settings, store)
    bar = FileProgress(len(found), f"kb {tally.verb} {name}", progress)
    try:
        for item in found:
            origin = Origin(name=item.path.name, collection=name, path=str(item.path))
            try:
                pages = bar.pages(item.shown)
                report = await indexer.index(item.path, origin, progress=pages, again=force)
            except BadDocument as exc:
                if exc.reason == "unknown_type" and not item.explicit:
                    tally.skipped += 1
                else:
                    tally.refused.append((item.shown, exc.reason))
            except OSError as exc:  # unreadable, or gone since the folder was walked
                tally.refused.append((item.shown, exc.strerror or type(exc).__name__))
            else:
                tally.count(report, embedding=indexer.embedder is not None)
            bar.advance()
    finally:
        bar.close()
        await indexer.preparer.close()  # its worker process ends with the command
        aclose = getattr(indexer.embedder, "aclose", None)
        if aclose is not None:
            await aclose()


class FileProgress:
    """A progress bar over files on a terminal, with a second one over the pages of a long
    document; nothing at all elsewhere (logs and pipes get the summary line)."""

    def __init__(self, total: int, label: str, shown: bool | None) -> None:
        import sys

        from tqdm import tqdm

        self.tqdm = tqdm
        self.on = sys.stderr.isatty() if shown is None else shown
        self.files = tqdm(total=total, desc=label, unit="file", disable=not self.on)
        self.page_bar: Any = None

    def pages(self, shown: str) -> Progress | None:
        if not self.on:
            return None

        def update(read: int, total: int | None) -> None:
            if total is None or total < 2:
                return
            if self.page_bar is None:
                self.page_bar = self.tqdm(
                    total=total, desc=shown[-40:], unit="page", position=1, leave=False
                )
            self.page_bar.n = min(read, total)
            self.page_bar.refresh()

        return update

    def advance(self) -> None:
        if self.page_bar is not None:
            self.page_bar.close()
            self.page_bar = None
        self.files.update(1)

    def close(self) -> None:
        if self.page_bar is not None:
            self.page_bar.close()
        self.files.close()


async def _rebuild(settings: Settings, store: Store, name: str) -> Tally:
    documents = await _documents_of(store, name)
    tally = Tally("rebuild", name)
    found: list[Candidate] = []
    for document in documents:
        recorded = document.path or ""
        present = bool(recorded) and await asyncio.to_thread(Path(recorded).is_file)
        if present:
            found.append(Candidate(Path(recorded), recorded, explicit=True))
        else:
            tally.refused.append((recorded or document.name, "missing"))
    await _index_each(settings, store, name, found, tally, None, force=True)
    return tally


async def _documents_of(store: Store, name: str) -> list[DocumentRow]:
    if name not in {row.name for row in await store.documents.collections()}:
        raise OperatorError(f"no collection {name!r}: see `lucie-bot kb list`")
    return list(await store.documents.collection_documents(name))


async def _list(store: Store, name: str | None) -> str:
    if name is None:
        rows = await store.documents.collections()
        if not rows:
            return "no collections yet: `lucie-bot kb add NAME PATH...` makes one"
        table: list[tuple[str, ...]] = [
            ("collection", "documents", "passages", "exportable", "created")
        ]
        table += [
            (r.name, str(r.documents), str(r.passages), _yes(r.exportable), _date(r.created_at))
            for r in rows
        ]
        return _columns(table)
    return await _list_documents(store, name)


async def _list_documents(store: Store, name: str) -> str:
    table: list[tuple[str, ...]] = [
        ("document", "kind", "pages", "passages", "embedded", "added", "path")
    ]
    table += [
        (
            d.name,
            d.kind,
            "" if d.pages is None else str(d.pages),
            str(d.passages),
            _yes(d.embedded),
            _date(d.added_at),
            d.path or "",
        )
        for d in await _documents_of(store, name)
    ]
    return _columns(table) if len(table) > 1 else f"collection {name} has no documents"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _remove(store: Store, name: str, path: Path | None) -> str:
    documents = await _documents_of(store, name)
    if path is None:
        await store.documents.remove_collection(name)
        count = len(documents)
        return f"kb remove {name}: collection removed ({count} {_plural(count, 'document')})"
    target = str(await asyncio.to_thread(path.resolve))
    removed = await store.documents.remove_collection(name, target)
    if not removed:
        raise OperatorError(f"kb remove {name}: no document of {path} in this collection")
    return f"kb remove {name}: {removed} {_plural(removed, 'document')} removed"
