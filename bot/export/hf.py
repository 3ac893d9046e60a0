"""`lucie-bot export --format hf`: every JSONL format as a config of one Hugging Face dataset
folder (Parquet, one file per config) with a dataset card.

Layout: DIR/<config>/train-00000-of-00001.parquet and DIR/README.md, the layout `datasets`'
push_to_hub writes for named configs, declared in the card's `configs:`, so that the folder
loads as it is (`load_dataset(DIR, "kto")`) and uploads to the hub unchanged.

This module loads pyarrow: only the hf export imports it, never the bot at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from bot.config import Settings
from bot.export import FORMATS
from bot.export.formats import BUILDERS, REFUSAL_FORMATS, WANTED, Row, RowMaker
from bot.export.hf_card import CardContext, Tally, card
from bot.export.source import ExportSource
from bot.export.writer import PART_FLAGS, ExportError, ExportRequest, export

DATA_FILE = "train-00000-of-00001.parquet"
# rows held before a Parquet row group is written: memory stays flat whatever the export's size
BATCH_ROWS = 10_000
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _schemas() -> dict[str, pa.Schema]:
    """One fixed schema per format, field for field what bot.export.formats builds.

    Fixed, not inferred: an inferred schema would change with the rows of each batch (a column
    null in one batch and a string in the next) and from one export to the next. Two values
    have no fixed shape and are kept as JSON text (a plain string column): `metadata.sampling`
    (whatever settings the model server was given) and the OpenAssistant `prompt`, a message
    tree as deep as the conversation with labels named by the operator. Arrow's JSON extension
    type would load them decoded, but only in recent `datasets` (its Json feature); older
    versions, and other Parquet readers, fail on it or show it as a string anyway."""
    text = pa.string()
    messages = pa.list_(pa.struct([("role", text), ("content", text)]))
    metadata = ("metadata", pa.struct(_METADATA))
    prompt_completion = [("prompt", messages), ("completion", messages)]
    return {
        "sft": pa.schema([("messages", messages), metadata]),
        "kto": pa.schema([*prompt_completion, ("label", pa.bool_()), metadata]),
        "dpo": pa.schema(
            [("prompt", messages), ("chosen", messages), ("rejected", messages), metadata]
        ),
        "oasst": pa.schema(
            [("message_tree_id", text), ("tree_state", text), ("prompt", text), metadata]
        ),
        "openwebui": _openwebui(messages, metadata),
        "refusal": pa.schema(
            [
                *prompt_completion,
                ("label", text),
                ("categories", pa.list_(text)),
                ("stage", text),
                ("metadata", pa.struct([*_METADATA, ("moderation_backend", text)])),
            ]
        ),
    }


_METADATA = [
    ("conversation_id", pa.string()),
    ("message_id", pa.string()),
    ("author_id", pa.string()),
    ("rater_ids", pa.list_(pa.string())),
    ("language", pa.string()),
    ("model", pa.string()),
    ("prompt_version", pa.int64()),
    ("prompt_sha256", pa.string()),
    ("policy_sha256", pa.string()),
    ("sampling", pa.string()),  # JSON text
    ("source", pa.string()),
    ("grounding", pa.string()),
    ("consent", pa.struct([("scope", pa.string()), ("notice_versions", pa.list_(pa.int64()))])),
    ("licence", pa.string()),
    ("created_at", pa.string()),
]


def _openwebui(messages: pa.DataType, metadata: tuple[str, pa.DataType]) -> pa.Schema:
    text, integer = pa.string(), pa.int64()
    data = [("rating", integer), ("model_id", text), ("reason", text), ("comment", text)]
    return pa.schema(
        [
            ("id", text),
            ("user_id", text),
            ("version", integer),
            ("type", text),
            ("data", pa.struct([*data, ("tags", pa.list_(text))])),
            ("meta", pa.struct([("chat_id", text), ("message_id", text), ("source", text)])),
            ("snapshot", pa.struct([("chat", pa.struct([("messages", messages)]))])),
            ("created_at", integer),
            ("updated_at", integer),
            metadata,
        ]
    )


SCHEMAS = _schemas()
# the values stored as JSON text (see _schemas), by format: paths into the row
JSON_FIELDS: dict[str, list[tuple[str, ...]]] = {
    name: [("metadata", "sampling"), *([("prompt",)] if name == "oasst" else [])]
    for name in FORMATS
}


def as_record(name: str, row: Row) -> Row:
    """The row as its Parquet record: free-form values as JSON text, and every field checked
    against the schema, since pyarrow silently drops a field the schema lacks (a field added
    to a format must be added here too, not lost)."""
    for path in JSON_FIELDS[name]:
        holder = row
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = json.dumps(holder[path[-1]], ensure_ascii=False)
    extra = _extra_field(row, SHAPES[name], name)
    if extra is not None:
        raise RuntimeError(f"hf export: a field the {name} schema lacks: {extra}")
    return row


# a schema as plain Python, checked against each row: a struct is the dict of its fields, a
# list a 1-tuple of its items' shape, anything else None (seven times faster than walking the
# pyarrow types for every row)
Shape = dict[str, "Shape"] | tuple["Shape"] | None


def _shape(kind: pa.DataType) -> Shape:
    if isinstance(kind, pa.StructType):
        return {kind.field(i).name: _shape(kind.field(i).type) for i in range(kind.num_fields)}
    if isinstance(kind, pa.ListType):
        return (_shape(kind.value_type),)
    return None


SHAPES = {name: _shape(pa.struct(list(schema))) for name, schema in SCHEMAS.items()}


def _extra_field(value: Any, shape: Shape, path: str) -> str | None:
    """The first field of value that shape lacks, by its path; None when all fit."""
    if isinstance(shape, dict) and isinstance(value, dict):
        for key, item in value.items():
            if key not in shape:
                return f"{path}.{key}"
            inner = shape[key]
            if inner is not None and item is not None:
                extra = _extra_field(item, inner, f"{path}.{key}")
                if extra is not None:
                    return extra
    elif isinstance(shape, tuple) and shape[0] is not None and isinstance(value, list):
        for item in value:
            extra = _extra_field(item, shape[0], path)
            if extra is not None:
                return extra
    return None


async def export_dataset(
    settings: Settings, request: ExportRequest, progress: TextIO | None
) -> int:
    """`export` with the dataset folder as its output: the same checks, source and consent."""
    return await export(settings, request, progress, write_dataset)


async def write_dataset(
    source: ExportSource, maker: RowMaker, request: ExportRequest, progress: TextIO | None
) -> int:
    """Every format into DIR.part, renamed to DIR once whole, as the JSONL export does."""
    _refuse_target(request.out)
    folder = _PartFolder(request.out)
    try:
        tally = Tally()
        shown = _Progress(progress)
        for name in FORMATS:
            with folder.create(name, DATA_FILE) as out:
                await _write_config(source, maker, request, name, out, tally, shown)
            if not tally.rows[name]:
                # `datasets` cannot load a split without rows (a file of none fails): a format
                # with no rows this time is left out, of the folder and of the card's configs
                folder.remove(name)
        context = CardContext(
            licence=maker.licence,
            collection=maker.collection,
            notice_version=source.notice_version,
            default_lang=source.default_lang,
            bot_name=source.bot_name,
            scrubbed=maker.scrub_texts,
            since_ms=request.since_ms,
            one_room=request.room is not None,
            exported_at=datetime.now(UTC),
        )
        with folder.create(None, "README.md") as out:
            files = {n: f"{n}/{DATA_FILE}" for n in FORMATS if tally.rows[n]}
            out.write(card(tally, context, files).encode())
        folder.publish()
    except OSError as exc:
        raise ExportError(f"cannot write {request.out}: {exc.strerror or exc}") from None
    finally:
        folder.close()  # removes DIR.part unless it was published
    return tally.total


async def _write_config(
    source: ExportSource,
    maker: RowMaker,
    request: ExportRequest,
    name: str,
    out: BinaryIO,
    tally: Tally,
    progress: _Progress,
) -> None:
    """One format's rows, a batch at a time, into out (a format without rows leaves a file of
    none, which write_dataset removes)."""
    build, batch = BUILDERS[name], []
    refused = name in REFUSAL_FORMATS
    with pq.ParquetWriter(out, SCHEMAS[name]) as parquet:
        # as the JSONL export: no context read for a question that can make no row here
        questions = source.questions(request.since_ms, request.room, refused, WANTED.get(name))
        async for group in questions:
            for row in build(maker, group):
                tally.add(name, row)  # before as_record: the tally reads the row as built
                batch.append(as_record(name, row))
            if len(batch) >= BATCH_ROWS:
                _write_batch(parquet, name, batch, tally)
                batch = []
            progress.show(name, tally.total)
        if batch:
            _write_batch(parquet, name, batch, tally)
    out.flush()
    tally.file_bytes[name] = os.fstat(out.fileno()).st_size


def _write_batch(parquet: pq.ParquetWriter, name: str, rows: list[Row], tally: Tally) -> None:
    """One row group: a batch's rows are the most the export holds at once."""
    batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMAS[name])
    tally.num_bytes[name] += batch.nbytes
    parquet.write_batch(batch)


class _Progress:
    """Rows so far on a terminal, at most twice a second, like the JSONL export."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.shown = time.monotonic()

    def show(self, name: str, count: int) -> None:
        if self.stream is not None and time.monotonic() - self.shown > 0.5:
            self.stream.write(f"\r{count} rows written ({name})")
            self.stream.flush()
            self.shown = time.monotonic()


def _refuse_target(out: Path) -> None:
    """An empty folder may be replaced (an operator made it for the export); anything else
    stays: a file, a link, or a folder with something in it."""
    if out.name in ("", ".", ".."):
        raise ExportError(f"--out {out}: name a new folder (the export makes it)")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{out} is a file or a link: choose a new folder for --out")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty: choose a new folder, or empty it")


class _PartFolder:
    """DIR.part, made new (0700) and written through its descriptor: a link planted at its
    name, or the folder swapped after it was made, never takes the rows elsewhere."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out.with_name(out.name + ".part")
        self.made: list[tuple[str | None, str]] = []  # (config folder, file): what to remove
        self.published = False
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            raise ExportError(
                f"{self.path} already exists (another export under way, or a leftover): remove it"
            ) from None
        except OSError as exc:
            raise ExportError(f"cannot create {self.path}: {exc.strerror}") from None
        try:
            self.fd = os.open(self.path, DIR_FLAGS)
        except OSError as exc:  # replaced by a link between the two calls
            with contextlib.suppress(OSError):
                os.rmdir(self.path)  # only ever removes an empty folder, never through a link
            raise ExportError(f"cannot open {self.path}: {exc.strerror}") from None

    def create(self, config: str | None, name: str) -> BinaryIO:
        """A new file (0600), in a new config folder (0700) when config is given."""
        where = self.fd
        if config is not None:
            os.mkdir(config, 0o700, dir_fd=self.fd)
            self.made.append((config, ""))
            where = os.open(config, DIR_FLAGS, dir_fd=self.fd)
        try:
            fd = os.open(name, PART_FLAGS, 0o600, dir_fd=where)
            self.made.append((config, name))
        finally:
            if where != self.fd:
                os.close(where)
        return os.fdopen(fd, "wb")

    def remove(self, config: str) -> None:
        """A config's folder and file, made here, removed before publishing."""
        for entry in [e for e in reversed(self.made) if e[0] == config]:
            self._remove(*entry)
            self.made.remove(entry)

    def publish(self) -> None:
        here = os.stat(self.path, follow_symlinks=False)
        mine = os.fstat(self.fd)
        if (here.st_dev, here.st_ino) != (mine.st_dev, mine.st_ino):
            raise ExportError(f"{self.path} was replaced while the export was written")
        try:
            os.rename(self.path, self.out)  # over an empty folder, or none
        except OSError as exc:
            raise ExportError(f"cannot rename {self.path} to {self.out}: {exc.strerror}") from None
        self.published = True

    def close(self) -> None:
        """Remove what this export made, by name inside its own folder: never anything else."""
        if not self.published:
            # best effort: whatever is left, the next export names (DIR.part already exists)
            for config, name in reversed(self.made):
                with contextlib.suppress(OSError):
                    self._remove(config, name)
            with contextlib.suppress(OSError):  # only ever the empty folder made here
                os.rmdir(self.path)
        os.close(self.fd)

    def _remove(self, config: str | None, name: str) -> None:
        if config is None:
            os.unlink(name, dir_fd=self.fd)
        elif not name:
            os.rmdir(config, dir_fd=self.fd)
        else:
            sub = os.open(config, DIR_FLAGS, dir_fd=self.fd)
            try:
                os.unlink(name, dir_fd=sub)
            finally:
                os.close(sub)
