"""Streamed replies from each provider, read through Providers.stream against
the stubs over real HTTP: the deltas, the usage, every way a stream ends early,
and the deadlines that bound it even against a provider dripping bytes; and
beneath them the server-sent-event framing, bounded against a hostile provider."""
import threading
import time

import pytest

from app.providers.registry import configured_providers
from app.providers import Ending, ProviderError, Providers, ProviderStreamCut, ProviderTimeout
from app.providers.sse_parser import MAX_LINE_BYTES, sse_events
from app.providers.streamed_reply import StreamBroken

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
KEYS = {"openai": "sk-test", "anthropic": "sk-ant-test"}
REPLY = "Hello from the stub, streamed word by word."


@pytest.fixture
def stubs(openai_stub, anthropic_stub):
    openai_stub.reset()
    anthropic_stub.reset()
    return {"openai": openai_stub, "anthropic": anthropic_stub}


@pytest.fixture
def providers(stubs):
    providers = Providers({"PROVIDERS": configured_providers(
        {"OPENAI_BASE_URL": f"{stubs['openai'].url}/v1", "ANTHROPIC_BASE_URL": f"{stubs['anthropic'].url}/v1",
         "PROVIDERS_FILE": ""}, lambda name: "")})
    yield providers
    providers.close()


@pytest.fixture(params=["openai", "anthropic"])
def provider(request):
    return request.param


@pytest.fixture
def stub(stubs, provider):
    stub = stubs[provider]
    stub.behaviour.reply = REPLY
    return stub


def stream(providers, provider, first_byte_seconds=5, seconds=10):
    now = time.monotonic()
    return providers.stream(provider, "model-x", MESSAGES, 100, None, KEYS.get(provider), now + first_byte_seconds,
                            now + seconds)


def read_until_failure(reply):
    """The deltas read before the stream failed, and its failure."""
    deltas = []
    with pytest.raises(ProviderError) as failure:
        for delta in reply:
            deltas.append(delta)
    return deltas, failure.value


def stream_threads():
    return [thread for thread in threading.enumerate() if thread.name == "provider-stream"]


def test_the_deltas_join_to_the_reply_with_the_usage_reported(providers, provider, stub):
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = 23, 9
    reply = stream(providers, provider)
    deltas = list(reply)
    assert len(deltas) == len(REPLY.split()) and "".join(deltas) == REPLY == reply.text
    assert (reply.usage["prompt_tokens"], reply.usage["completion_tokens"]) == (23, 9)
    assert reply.ending == Ending("stop")
    assert stub.requests[-1]["body"]["stream"] is True


@pytest.mark.parametrize(("provider", "said", "ending"), [
    ("openai", ("length", None), Ending("length")),
    ("openai", ("content_filter", None), Ending("stop")),
    ("anthropic", ("max_tokens", None), Ending("length")),
    ("anthropic", ("stop_sequence", "###"), Ending("stop_sequence", "###")),
    ("openai", ("tool_calls", None), Ending("tool_calls")),
    ("anthropic", ("tool_use", None), Ending("tool_calls")),
    ("anthropic", ("refusal", None), Ending("stop")),
])
def test_why_a_reply_ended_is_read_from_plain_and_streamed_replies(providers, stub, provider, said, ending):
    stub.behaviour.stop_reason, stub.behaviour.stop_sequence = said
    streamed = stream(providers, provider)
    list(streamed)
    plain = providers.complete(provider, "model-x", MESSAGES, 100, None, KEYS[provider], time.monotonic() + 5)
    assert streamed.ending == plain.ending == ending


def test_openai_is_always_asked_for_usage(providers, stubs):
    list(stream(providers, "openai"))
    assert stubs["openai"].requests[-1]["body"]["stream_options"] == {"include_usage": True}


def test_a_stream_without_usage_has_none(providers, provider, stub):
    stub.behaviour.with_usage = False
    reply = stream(providers, provider)
    assert "".join(reply) == REPLY and (reply.usage["prompt_tokens"], reply.usage["completion_tokens"]) == (None, None)


def test_a_stream_cut_short_raises_after_its_deltas_and_keeps_them(providers, provider, stub):
    stub.behaviour.cut_after_chunks = 3
    reply = stream(providers, provider)
    deltas, failure = read_until_failure(reply)
    assert isinstance(failure, ProviderStreamCut) and failure.provider == provider
    assert deltas == ["Hello", " from", " the"] and reply.text == "Hello from the"
    # As far as it was reported: Anthropic's message_start gives the input; its
    # output_tokens there (1) counts no output, so only message_delta's would.
    assert (reply.usage["prompt_tokens"], reply.usage["completion_tokens"]) == (
        (11, None) if provider == "anthropic" else (None, None))


def test_an_error_event_cuts_the_stream(providers, provider, stub):
    stub.behaviour.error_event_after_chunks = 2
    reply = stream(providers, provider)
    deltas, failure = read_until_failure(reply)
    assert isinstance(failure, ProviderStreamCut)
    assert failure.reason == {"openai": "error event (server_error)", "anthropic": "error event (overloaded_error)"}[
        provider]
    assert reply.text == "".join(deltas) == "Hello from"


def test_an_error_event_before_any_text_is_a_plain_provider_error(providers, provider, stub):
    stub.behaviour.error_event_after_chunks = 0
    deltas, failure = read_until_failure(stream(providers, provider))
    assert deltas == [] and type(failure) is ProviderError and failure.reason.startswith("error event")


def test_an_error_status_fails_before_any_delta(providers, provider, stub):
    stub.behaviour.status = 529
    deltas, failure = read_until_failure(stream(providers, provider))
    assert deltas == [] and type(failure) is ProviderError and failure.status == 529


def test_a_garbled_answer_fails_before_any_delta(providers, provider, stub):
    stub.behaviour.garbled = True
    deltas, failure = read_until_failure(stream(providers, provider))
    assert deltas == [] and type(failure) is ProviderError


def test_a_stall_before_the_first_byte_times_out_at_its_deadline(providers, provider, stub):
    stub.behaviour.stall_seconds = 1.5
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        list(stream(providers, provider, first_byte_seconds=0.5, seconds=10))
    assert 0.45 <= time.monotonic() - started < 1.0
    assert _eventually(lambda: stub.abandoned == 1 and not stream_threads(), timeout=3)  # its answer found no one


def test_a_dripping_stream_is_cut_at_its_deadline_and_its_connection_released(providers, provider, stub):
    stub.behaviour.reply = " ".join(["word"] * 200)
    stub.behaviour.drip_seconds = 0.002
    started = time.monotonic()
    reply = stream(providers, provider, first_byte_seconds=2, seconds=2.5)
    deltas, failure = read_until_failure(reply)
    assert 2.4 <= time.monotonic() - started <= 3.5
    assert isinstance(failure, ProviderStreamCut) and failure.reason == "deadline passed"
    assert deltas and reply.text == "".join(deltas)
    assert _eventually(lambda: stub.abandoned == 1 and not stream_threads())


def test_close_releases_the_connection_early(providers, provider, stub):
    stub.behaviour.chunk_delay_seconds = 0.2
    reply = stream(providers, provider)
    assert next(iter(reply)) == "Hello"
    reply.close()
    assert _eventually(lambda: stub.abandoned == 1 and not stream_threads())


def test_nul_and_split_surrogate_pairs_are_cleaned_across_chunks(providers, provider, stub):
    stub.behaviour.chunks = ["Hel", "\x00", "lo\x00 wor", "ld \ud83d", "\ude00!"]
    stub.behaviour.drip_seconds = 0.0005  # every byte read apart
    reply = stream(providers, provider)
    assert "".join(reply) == "Hello world \U0001F600!" == reply.text


def test_a_line_longer_than_the_bound_is_refused_before_it_ends(providers, provider, stub):
    # Twice the bound: the socket's reads (64 KiB at most) pass it long before the
    # line's end. The events after it find the connection already given up.
    stub.behaviour.chunks = ["x" * (2 * MAX_LINE_BYTES)] + ["more"] * 50
    stub.behaviour.chunk_delay_seconds = 0.1
    deltas, failure = read_until_failure(stream(providers, provider))
    assert deltas == [] and type(failure) is ProviderError and failure.reason == "malformed event"
    assert _eventually(lambda: stub.abandoned == 1 and not stream_threads())


def test_an_unterminated_line_is_buffered_only_up_to_the_bound():
    def endless_line():
        yield b"data: "
        while True:
            yield b"x" * 65536

    with pytest.raises(StreamBroken, match="malformed event"):
        list(sse_events(endless_line()))


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_events_are_read_whatever_the_line_end_and_however_the_bytes_are_split(end):
    body = end.join([b"event: ping", b"data: {}", b"", b": a comment", b"data: a", b"data:b", b"id: 7", b"", b""])
    for size in (1, 2, 3, len(body)):
        chunks = [body[start:start + size] for start in range(0, len(body), size)]
        assert list(sse_events(chunks)) == [("ping", "{}"), ("message", "a\nb")]


def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped():
    assert list(sse_events([b"data: a\n\n", b"event: end\ndata: b\n"])) == [("message", "a")]


def test_utf8_split_across_chunks_is_read_and_invalid_utf8_refused():
    assert list(sse_events([b"data: \xf0\x9f", b"\x98\x80\n\n"])) == [("message", "\U0001F600")]
    with pytest.raises(StreamBroken, match="malformed event"):
        list(sse_events([b"data: \xff\n\n"]))


def test_local_models_stream_word_by_word_what_complete_gives(providers):
    messages = [{"role": "user", "content": "Stream this, word by word."}]
    for model_name in ("echo", "reverse"):
        completion = providers.complete("local", model_name, messages, 5, None, None, time.monotonic() + 1)
        reply = providers.stream("local", model_name, messages, 5, None, None, 0, 0)
        deltas = list(reply)
        assert len(deltas) == 5 and "".join(deltas) == completion.content == reply.text
        assert (reply.usage["prompt_tokens"], reply.usage["completion_tokens"]) == (
            completion.prompt_tokens, completion.completion_tokens)


def _eventually(condition, timeout=2):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
