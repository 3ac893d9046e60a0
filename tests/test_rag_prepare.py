"""Preparation in the worker process: real files of every kind in, passages with index terms
out, a PDF in batches; bad files refused for one reason; the event loop free meanwhile; a
stuck or crashed worker replaced."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import RagSettings
from bot.rag import prepare as prepare_module
from bot.rag.analysis import index_terms
from bot.rag.documents import BadDocument, Kind
from bot.rag.extract import read_blocks
from bot.rag.extract_pdf import MAX_PAGE_CHARS
from bot.rag.prepare import PreparedBatch, Preparer, prepare_batch
from tests.support.documents import (
    make_corrupt,
    make_docx,
    make_encrypted_pdf,
    make_image_pdf,
    make_odt,
    make_odt_bomb,
    make_pdf,
    make_text_bomb_pdf,
)

FILLER = "Le dossier de demande d'allocation est instruit par la caisse départementale. "
UNIQUE = "Le formulaire bleu se dépose au guichet numéro sept avant midi."
ITEMS = [
    ("h1", "Aides au logement"),
    ("p", "L'aide personnalisée au logement est versée au propriétaire."),
    ("h2", "Conditions"),
    ("p", "Le logement doit être la résidence principale du demandeur."),
]


@pytest.fixture(scope="module")
def big_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # full pages (about 3,500 characters each), so that reading them all takes a while
    pages = [f"Page {number}. " + FILLER * 44 for number in range(1, 301)]
    return make_pdf(pages, tmp_path_factory.mktemp("big") / "gros.pdf")


@pytest.fixture
async def preparer() -> AsyncIterator[Preparer]:
    worker = Preparer(RagSettings(passage_chars=400, overlap_chars=60))
    yield worker
    await worker.close()


async def prepare(
    preparer: Preparer, path: Path, mimetype: str | None = None
) -> list[PreparedBatch]:
    kind, pages = await preparer.inspect(path, path.name, mimetype)
    return [batch async for batch in preparer.batches(path, kind, pages)]


async def refusal(preparer: Preparer, path: Path, mimetype: str | None = None) -> str:
    with pytest.raises(BadDocument) as excinfo:
        await prepare(preparer, path, mimetype)
    return excinfo.value.reason


def test_prepare_batch_reads_its_pages_and_says_when_done(tmp_path: Path) -> None:
    pdf = make_pdf([f"Page {n}. {FILLER}" for n in range(1, 6)], tmp_path / "cinq.pdf")
    first = prepare_batch(str(pdf), "pdf", 0, 2, 400, 60, 0)
    assert (first.pages_read, first.done) == (2, False)
    assert [p.passage.page for p in first.passages] == [1, 2]
    last = prepare_batch(str(pdf), "pdf", 4, 2, 400, 60, 10)
    assert (last.pages_read, last.done) == (1, True)
    assert [(p.passage.ordinal, p.passage.page) for p in last.passages] == [(10, 5)]
    passage = last.passages[0]
    assert passage.terms == index_terms(f"\n{passage.passage.text}")
    assert "dossi" in passage.terms.split()  # stemmed, as the full-text index reads it


async def test_a_sentence_on_page_three_is_cited_on_page_three(
    tmp_path: Path, preparer: Preparer
) -> None:
    pages = [FILLER * 3, FILLER * 2, f"{FILLER}\n\n{UNIQUE}", FILLER * 3]
    batches = await prepare(preparer, make_pdf(pages, tmp_path / "guide.pdf"))
    found = [p.passage for batch in batches for p in batch.passages if UNIQUE in p.passage.text]
    assert [p.page for p in found] == [3]


async def test_a_big_pdf_comes_in_batches_with_numbered_passages(
    big_pdf: Path, preparer: Preparer
) -> None:
    batches = await prepare(preparer, big_pdf)
    assert len(batches) == 15  # 300 pages, 20 at a time
    assert sum(batch.pages_read for batch in batches) == 300
    assert [batch.done for batch in batches] == [False] * 14 + [True]
    passages = [p.passage for batch in batches for p in batch.passages]
    assert [p.ordinal for p in passages] == list(range(len(passages)))
    assert {p.page for p in passages} == set(range(1, 301))


async def test_the_event_loop_runs_while_a_big_pdf_is_prepared(
    big_pdf: Path, preparer: Preparer
) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    # the whole file in one batch: run on the loop, it would block it for well over the bound
    preparer.batch_pages = 300
    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    batches = await prepare(preparer, big_pdf)  # the worker's start-up included
    elapsed = time.monotonic() - started
    stop.set()
    await ticker
    assert len(batches) == 1 and len(batches[0].passages) > 2000
    assert max(gaps) < 0.2, f"event loop blocked for {max(gaps):.3f}s"
    assert len(gaps) > elapsed / 0.05  # it kept ticking throughout
    assert elapsed > 0.3  # the work was long enough that a blocked loop would have shown


@pytest.mark.parametrize("kind", ["docx", "odt", "html", "markdown", "text"])
async def test_each_kind_gives_passages_with_sections(
    tmp_path: Path, preparer: Preparer, kind: str
) -> None:
    path = _document(tmp_path, kind)
    found_kind, pages = await preparer.inspect(path, path.name, None)
    assert (found_kind, pages) == (kind, None)
    batches = [batch async for batch in preparer.batches(path, found_kind, pages)]
    assert len(batches) == 1 and batches[0].done
    passages = [p.passage for p in batches[0].passages]
    sections = {p.section for p in passages}
    if kind == "text":
        assert sections == {None}
        assert "résidence principale" in passages[0].text
    else:
        assert sections == {"Aides au logement", "Conditions"}
        by_section = {p.section: p.text for p in passages}
        assert (
            by_section["Conditions"]
            == "Le logement doit être la résidence principale du demandeur."
        )
    assert all(p.terms for p in batches[0].passages)


def _document(folder: Path, kind: str) -> Path:
    if kind == "docx":
        return make_docx(ITEMS, folder / "aides.docx")
    if kind == "odt":
        return make_odt(ITEMS, folder / "aides.odt")
    texts = [text for _, text in ITEMS]
    if kind == "html":
        body = f"<h1>{texts[0]}</h1><p>{texts[1]}</p><h2>{texts[2]}</h2><p>{texts[3]}</p>"
        content = f"<html><body>{body}</body></html>"
        name = "aides.html"
    elif kind == "markdown":
        content = f"# {texts[0]}\n\n{texts[1]}\n\n## {texts[2]}\n\n{texts[3]}\n"
        name = "aides.md"
    else:
        content = "\n\n".join(texts)
        name = "aides.txt"
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


async def test_bad_files_are_refused_for_one_reason(tmp_path: Path, preparer: Preparer) -> None:
    assert await refusal(preparer, make_corrupt(tmp_path / "abime.pdf", b"%PDF-1.4\n")) == "corrupt"
    assert (
        await refusal(preparer, make_corrupt(tmp_path / "abime.docx", b"PK\x03\x04")) == "corrupt"
    )
    assert await refusal(preparer, make_encrypted_pdf(tmp_path / "secret.pdf")) == "encrypted"
    assert await refusal(preparer, make_image_pdf(tmp_path / "scan.pdf", pages=3)) == "no_text"
    blank = tmp_path / "vide.txt"
    blank.write_text("\n\n  …  \n— !\n", encoding="utf-8")
    assert await refusal(preparer, blank) == "no_text"
    assert (
        await refusal(preparer, make_corrupt(tmp_path / "image.png", b"\x89PNG")) == "unknown_type"
    )
    assert await refusal(preparer, make_odt_bomb(tmp_path / "bombe.odt", 300)) == "too_big"
    # and the worker is still there for a good file
    assert await prepare(preparer, make_odt(ITEMS, tmp_path / "bon.odt"))


async def test_damaged_pdfs_never_take_the_worker_down(tmp_path: Path, preparer: Preparer) -> None:
    original = make_pdf([f"{FILLER}\n\n{UNIQUE}"] * 4, tmp_path / "sain.pdf").read_bytes()
    rng = random.Random(13)
    outcomes = set()
    for index in range(12):
        data = bytearray(original)
        for _ in range(rng.randint(1, 10)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if index % 3 == 0:
            data = data[: rng.randint(len(data) // 2, len(data))]
        damaged = tmp_path / f"abime{index}.pdf"
        damaged.write_bytes(bytes(data))
        try:
            await prepare(preparer, damaged)
            outcomes.add("read")
        except BadDocument as exc:
            outcomes.add(exc.reason)
    assert outcomes <= {"read", "corrupt", "no_text"}
    assert await prepare(preparer, make_odt(ITEMS, tmp_path / "bon.odt"))


async def test_too_big_by_size_or_pages(tmp_path: Path) -> None:
    pdf = make_pdf(["Un.", "Deux.", "Trois."], tmp_path / "trois.pdf")
    small = Preparer(RagSettings(max_file_mb=0.001))
    short = Preparer(RagSettings(max_pages=2))
    enough = Preparer(RagSettings(max_pages=3))
    try:
        assert await refusal(small, pdf) == "too_big"
        assert await refusal(short, pdf) == "too_big"
        assert len(await prepare(enough, pdf)) == 1
    finally:
        for worker in (small, short, enough):
            await worker.close()


async def test_the_worker_is_capped_and_lower_priority(tmp_path: Path, preparer: Preparer) -> None:
    await prepare(preparer, make_odt(ITEMS, tmp_path / "a.odt"))
    [pid] = preparer.worker_pids()
    limits = _read_proc(pid, "limits")
    address_space = next(
        line for line in limits.splitlines() if line.startswith("Max address space")
    )
    assert address_space.split()[3] == str(2 * 1024**3)
    assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, os.getpid())


async def test_a_stuck_batch_is_killed_and_the_next_file_gets_a_fresh_worker(
    tmp_path: Path, big_pdf: Path, preparer: Preparer
) -> None:
    kind, pages = await preparer.inspect(big_pdf, big_pdf.name, None)  # worker started
    [stuck] = preparer.worker_pids()
    preparer.batch_pages, preparer.timeout_s = 300, 0.01  # far more work than the time given
    with pytest.raises(BadDocument) as excinfo:
        async for _ in preparer.batches(big_pdf, kind, pages):
            pass
    assert excinfo.value.reason == "corrupt"
    await _gone(stuck)
    preparer.batch_pages, preparer.timeout_s = 20, 60.0
    assert await prepare(preparer, make_odt(ITEMS, tmp_path / "a.odt"))
    assert preparer.worker_pids() != [stuck]


async def test_a_crashed_worker_fails_only_its_file(
    tmp_path: Path, big_pdf: Path, preparer: Preparer
) -> None:
    kind, pages = await preparer.inspect(big_pdf, big_pdf.name, None)
    [worker] = preparer.worker_pids()
    preparer.batch_pages = 300  # one long batch, to crash in the middle of

    async def read_all() -> None:
        async for _ in preparer.batches(big_pdf, kind, pages):
            pass

    reading = asyncio.create_task(read_all())
    await asyncio.sleep(0.05)
    os.kill(worker, signal.SIGKILL)  # as if a parser had crashed the process
    with pytest.raises(BadDocument) as excinfo:
        await reading
    assert excinfo.value.reason == "corrupt"
    assert await prepare(preparer, make_odt(ITEMS, tmp_path / "a.odt"))


async def test_a_worker_that_died_idle_is_replaced_without_blame(
    tmp_path: Path, preparer: Preparer
) -> None:
    await prepare(preparer, make_odt(ITEMS, tmp_path / "a.odt"))
    [worker] = preparer.worker_pids()
    os.kill(worker, signal.SIGKILL)  # say, the system's out-of-memory killer
    await _gone(worker)
    await asyncio.sleep(0.2)  # the executor notices
    assert await prepare(preparer, make_odt(ITEMS, tmp_path / "b.odt"))
    assert preparer.worker_pids() not in ([], [worker])


async def test_one_file_at_a_time(tmp_path: Path, preparer: Preparer) -> None:
    pages = [f"Page {n}. {FILLER * 4}" for n in range(1, 61)]
    first = make_pdf(pages, tmp_path / "premier.pdf")
    second = make_pdf(pages, tmp_path / "second.pdf")
    order: list[str] = []

    async def run(path: Path) -> None:
        kind, count = await preparer.inspect(path, path.name, None)
        async for _ in preparer.batches(path, kind, count):
            order.append(path.name)
            await asyncio.sleep(0.01)  # the consumer's own work (embedding, storing)

    await asyncio.gather(run(first), run(second))
    assert len(order) == 6
    assert order in (
        ["premier.pdf"] * 3 + ["second.pdf"] * 3,
        ["second.pdf"] * 3 + ["premier.pdf"] * 3,
    )


async def test_close_stops_the_worker(tmp_path: Path) -> None:
    worker = Preparer(RagSettings())
    kind: Kind
    kind, _ = await worker.inspect(make_odt(ITEMS, tmp_path / "a.odt"), "a.odt", None)
    assert kind == "odt"
    [pid] = worker.worker_pids()
    await worker.close()
    await _gone(pid)
    assert worker.worker_pids() == []


async def _gone(pid: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if _process_state(pid) in ("gone", "Z"):  # Z: dead, its parent yet to reap it
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {pid} still running")


def _read_proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def _process_state(pid: int) -> str:
    try:
        # the state follows the command name, which is in parentheses and may hold spaces
        return _read_proc(pid, "stat").rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_page_drawing_an_endless_stream_gives_at_most_the_page_cap(tmp_path: Path) -> None:
    bomb = make_text_bomb_pdf(tmp_path / "bomb.pdf", pages=3, chars_per_page=1_000_000)
    assert bomb.stat().st_size < 20_000  # a few kilobytes of file...
    per_page: dict[int | None, int] = {}
    for block in read_blocks(bomb, "pdf"):
        per_page[block.page] = per_page.get(block.page, 0) + len(block.text)
    assert sorted(per_page) == [1, 2, 3]
    assert max(per_page.values()) <= MAX_PAGE_CHARS  # ...that would otherwise give 3 MB


async def test_a_document_past_the_passage_cap_is_refused_whole(
    tmp_path: Path, preparer: Preparer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare_module, "MAX_PASSAGES", 100)
    bomb = make_text_bomb_pdf(tmp_path / "bomb.pdf", pages=40, chars_per_page=20_000)
    kind, pages = await preparer.inspect(bomb, "bomb.pdf", "application/pdf")
    seen = 0
    with pytest.raises(BadDocument) as refused:
        async for batch in preparer.batches(bomb, kind, pages):
            seen += len(batch.passages)
    assert refused.value.reason == "too_big"
    assert seen <= 100  # no batch past the cap is handed on
