"""The model client against the stand-in server over real HTTP and SSE."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web

from bot.config import LLMSettings
from bot.llm.client import ChatModel, LLMError, Sampling, StreamResult, estimate_tokens
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import eventually
from tests.support.synapse import free_port

SAMPLING = Sampling(temperature=0.2, top_p=0.9, max_tokens=64)
QUESTION = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Bonjour à tous"}]


def model_for(llm, **overrides) -> ChatModel:
    settings = LLMSettings(
        base_url=llm.base_url,
        model="stand-in",
        api_key="sk-test",
        first_token_timeout_s=2,
        chunk_timeout_s=1,
        **overrides,
    )
    return ChatModel(settings)


async def collect(model, messages=QUESTION):
    result = StreamResult()
    parts = [part async for part in model.stream(messages, SAMPLING, result)]
    return parts, result


async def serve(routes: list[tuple[str, str, object]]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_streams_deltas_and_sends_sampling_and_key(llm):
    llm.default = Behaviour(token_delay=0.05)
    model = model_for(llm)
    try:
        parts, result = await collect(model)
    finally:
        await model.aclose()
    assert "".join(parts) == "Réponse à « Bonjour à tous »"
    assert len(parts) > 1  # streamed, not one block
    assert result.finish_reason == "stop" and result.tokens == 7  # the server's usage
    assert result.first_token_at is not None
    request = llm.requests[-1]
    assert request["body"]["temperature"] == 0.2 and request["body"]["max_tokens"] == 64
    assert request["body"]["stream"] is True
    assert request["headers"]["Authorization"] == "Bearer sk-test"


async def test_tokens_received_together_are_parsed_and_handed_over_together():
    """A busy server's tokens pile up between two reads: they are one delta, not one wake-up of
    the whole answer path per token."""
    events = [
        {"choices": [{"index": 0, "delta": {"content": f"mot{n} "}, "finish_reason": None}]}
        for n in range(40)
    ]
    whole = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"

    async def completions(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(whole.encode())  # what forty reads would have found waiting
        return response

    runner, url = await serve([("POST", "/v1/chat/completions", completions)])
    model = ChatModel(LLMSettings(base_url=f"{url}/v1", model="m"))
    try:
        parts, result = await collect(model)
    finally:
        await model.aclose()
        await runner.cleanup()
    assert "".join(parts) == "".join(f"mot{n} " for n in range(40))
    assert len(parts) == 1 and result.tokens == 40


async def test_answers_one_after_another_reuse_one_connection(llm):
    model = model_for(llm)
    try:
        for _ in range(5):
            _, result = await collect(model)
            assert result.finish_reason == "stop"
    finally:
        await model.aclose()
    assert len({request["peer"] for request in llm.requests}) == 1


async def test_token_counts_use_tokenize_then_fall_back_to_the_estimate(llm):
    model = model_for(llm)
    try:
        assert await model.count_tokens(QUESTION) == 1 + 3 + 2 * 4
        assert llm.tokenize_requests == 2
        await model.count_tokens(QUESTION)
        assert llm.tokenize_requests == 2  # cached
    finally:
        await model.aclose()
    llm.tokenize = False
    model = model_for(llm)
    try:
        text = "x" * 30
        assert await model.count_tokens([{"role": "user", "content": text}]) == 10 + 4
        assert estimate_tokens(text) == 10
    finally:
        await model.aclose()


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        (Behaviour(status=503), "server"),
        (
            Behaviour(status=400, error_body='{"error":"maximum context length exceeded"}'),
            "context_too_long",
        ),
        (Behaviour(status=401, error_body='{"error":"bad key"}'), "rejected"),
        (Behaviour(broken_after=2), "bad_response"),
        (Behaviour(first_delay=3), "timeout"),
        (Behaviour(hang_after=2), "timeout"),
    ],
)
async def test_failures_are_classified(llm, behaviour, kind):
    llm.default = behaviour
    model = model_for(llm)
    try:
        with pytest.raises(LLMError) as caught:
            await collect(model)
    finally:
        await model.aclose()
    assert caught.value.kind == kind


async def test_unreachable_server(llm):
    llm.stop()
    model = model_for(llm)
    try:
        with pytest.raises(LLMError) as caught:
            await collect(model)
        assert await model.count_tokens(QUESTION) > 0  # estimates when it cannot ask
    finally:
        await model.aclose()
    assert caught.value.kind == "unreachable"


BOUND_S = 30  # far above every time-out configured here: reaching it means a wait had no end


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        (Behaviour(hang_before_headers=True), "timeout"),
        (Behaviour(stall_after_headers=True), "timeout"),
        (Behaviour(stall_after_headers=True, content_type="application/json"), "bad_response"),
        (Behaviour(stall_after_headers=True, status=503), "timeout"),
        (Behaviour(keep_alive_only=True), "timeout"),
    ],
    ids=["no-headers", "sse-then-nothing", "json-then-nothing", "error-body-stalls", "no-text"],
)
async def test_a_server_that_never_answers_times_out(llm, behaviour, kind):
    llm.default = behaviour
    model = model_for(llm)
    try:
        with pytest.raises(LLMError) as caught:
            await asyncio.wait_for(collect(model), BOUND_S)
    finally:
        await model.aclose()
    assert caught.value.kind == kind


async def test_the_whole_answer_is_bounded_by_the_total_time_out(llm):
    llm.default = Behaviour(flood=True)
    model = model_for(llm, total_timeout_s=2)
    try:
        with pytest.raises(LLMError) as caught:
            await asyncio.wait_for(collect(model), BOUND_S)
    finally:
        await model.aclose()
    assert caught.value.kind == "timeout"


async def test_probes_of_a_server_that_trickles_forever_give_up(llm):
    llm.probes_trickle = True
    model = model_for(llm, connect_timeout_s=1)
    try:
        count = await asyncio.wait_for(model.count_tokens(QUESTION), BOUND_S)
        assert count == estimate_tokens("sys") + estimate_tokens("Bonjour à tous") + 2 * 4
        assert await asyncio.wait_for(model.reachable(), BOUND_S) == {llm.base_url: False}
    finally:
        await model.aclose()


async def test_walking_away_from_a_stream_closes_it_at_once(llm):
    llm.default = Behaviour(flood=True)
    model = model_for(llm)
    try:
        async with contextlib.aclosing(model.stream(QUESTION, SAMPLING, StreamResult())) as parts:
            async for _ in parts:
                break

        async def closed() -> bool:
            return llm.disconnects == 1 and llm.open_streams == 0

        assert await eventually(closed, within=BOUND_S)
    finally:
        await model.aclose()


async def test_the_usage_chunk_gives_prompt_and_answer_tokens():
    """Quotas count both: the server's own figures, read from its last chunk."""
    usages = [{"prompt_tokens": 1234, "completion_tokens": 7, "total_tokens": 1241}]

    async def completions(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        text = {"choices": [{"index": 0, "delta": {"content": "Oui"}, "finish_reason": "stop"}]}
        usage = {"choices": [], "usage": usages[-1]}
        for chunk in (text, usage):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    runner, url = await serve([("POST", "/v1/chat/completions", completions)])
    model = ChatModel(LLMSettings(base_url=f"{url}/v1", model="m"))
    try:
        parts, result = await collect(model)
        assert parts == ["Oui"] and result.prompt_tokens == 1234 and result.tokens == 7
        usages.append({"prompt_tokens": "many", "completion_tokens": 3})  # not a number
        _, result = await collect(model)
        assert result.prompt_tokens == 0 and result.tokens == 3
        usages.append({"prompt_tokens": 10**30, "completion_tokens": -5})  # a hostile server
        _, result = await collect(model)
        assert result.prompt_tokens == 10_000_000 and result.tokens == 0
    finally:
        await model.aclose()
        await runner.cleanup()


async def test_a_redirect_is_never_followed_with_the_conversation():
    """A model server (or whoever answers in its name) that redirects gets no second copy of
    the conversation sent elsewhere: the answer fails as a bad response."""
    elsewhere: list[bytes] = []

    async def collector(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.Response(text="{}")

    sink, sink_url = await serve([("*", "/{tail:.*}", collector)])

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{sink_url}{request.path}")

    source, source_url = await serve([("*", "/{tail:.*}", redirect)])
    model = ChatModel(LLMSettings(base_url=f"{source_url}/v1", model="m", tokenize="auto"))
    try:
        with pytest.raises(LLMError) as raised:
            await collect(model)
        assert raised.value.kind == "bad_response"
        await model.count_tokens(QUESTION)  # /tokenize, /models and /metrics alike
        await model.reachable()
        await model.server_waiting()
    finally:
        await model.aclose()
        await source.cleanup()
        await sink.cleanup()
    assert elsewhere == []


async def test_a_hostile_token_count_falls_back_to_the_estimate():
    counts = ["1e999", "NaN", "-5", "7"]

    async def tokenize(request: web.Request) -> web.Response:
        return web.Response(text=f'{{"count": {counts.pop(0)}}}', content_type="application/json")

    runner, url = await serve([("POST", "/tokenize", tokenize)])
    model = ChatModel(LLMSettings(base_url=f"{url}/v1", model="m"))
    text = "Bonjour à tous"
    try:
        assert await model._count(text) == estimate_tokens(text)  # infinity
        assert await model._count(text + " ") == estimate_tokens(text + " ")  # not a number
        assert await model._count("a") == 0  # negative, clamped
        assert await model._count("b") == 7
        assert await model._count("b") == 7  # kept, not asked again
    finally:
        await model.aclose()
        await runner.cleanup()
    assert counts == []
