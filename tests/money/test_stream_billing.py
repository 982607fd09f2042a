"""Every streamed answer a client received is billed, whatever the client and
the provider do, under gunicorn with provider stubs on 127.0.0.1: a client
that stops reading is cut off and billed for everything the provider produced,
to the last decimal, with no more than the outbox buffered for it; Anthropic's
output is counted only from message_delta, and estimated without it; an
estimate counts UTF-8 bytes."""
import json
import signal
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from app.api.outbox import OUTBOX_BYTES
from app.money import format_money
from app.providers import prompt_tokens_upper_bound
from tests.support import (HOUSE_ANTHROPIC, HOUSE_OPENAI, bearer, cost, live_service, live_user,
                           readme_ledger_query)

GPT_41, GPT_4O_MINI, HAIKU = "openai/gpt-4.1", "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022"


def service(database, stubs, **settings):
    openai_stub, anthropic_stub = stubs
    return live_service(database, OPENAI_BASE_URL=f"{openai_stub.url}/v1", OPENAI_API_KEY=HOUSE_OPENAI,
                        ANTHROPIC_BASE_URL=f"{anthropic_stub.url}/v1", ANTHROPIC_API_KEY=HOUSE_ANTHROPIC,
                        **settings)


def settled_now(database, user_id):
    """[(hold amount, charge, release metadata)] when every hold of the user is settled, else None."""
    rows = database.query(
        "SELECT h.amount, h.amount - r.amount, r.metadata FROM transactions h"
        " LEFT JOIN transactions r ON r.related_transaction_id = h.id AND r.type = 'release'"
        " WHERE h.user_id = %s AND h.type = 'hold' ORDER BY h.id", (user_id,))
    return rows if rows and all(row[1] is not None for row in rows) else None


def settled_calls(database, user_id, timeout=60):
    """settled_now's rows, once there are some."""
    deadline = time.monotonic() + timeout
    while (rows := settled_now(database, user_id)) is None:
        assert time.monotonic() < deadline, "a hold stayed open"
        time.sleep(0.05)
    return rows


def assert_ledger_clean(database):
    assert database.query(readme_ledger_query()) == []
    assert database.query("SELECT count(*) FROM user_balance WHERE held_balance <> 0") == [(0,)]


def stop_and_read_log(live):
    """The service's JSON log lines, once it has stopped."""
    live.process.send_signal(signal.SIGTERM)
    live.process.wait(timeout=30)
    lines = live.output().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def raw_request(url, path, headers, body, receive_buffer):
    """A socket that sent the request and reads with a receive buffer of `receive_buffer` bytes."""
    address = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((address.hostname, address.port))
    payload = json.dumps(body).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in
                   {"Host": address.netloc, "Content-Type": "application/json",
                    "Content-Length": str(len(payload)), **headers}.items())
    sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + payload)
    return sock


def read_to_the_end(sock):
    """What the socket still gives until the server ends the connection."""
    sock.settimeout(30)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def read_slowly_until(sock, done):
    """Reads 4 KiB every 50 ms (about 80 KB/s) until `done()`; what came."""
    sock.settimeout(30)
    received = b""
    while not done():
        try:
            received += sock.recv(4096)
        except ConnectionResetError:
            break
        time.sleep(0.05)
    return received


@pytest.mark.parametrize("client", ["stalled", "slow"])
def test_a_client_too_slow_for_its_stream_is_cut_off_and_billed_for_everything_the_provider_sent(database, stubs,
                                                                                                   client):
    """A stalled client takes nothing more after 4 KiB; a slow one reads all
    along, far slower than the provider writes, so it would hold the provider's
    stream back past its deadline."""
    openai_stub = stubs[0]
    openai_stub.behaviour.chunks = ["word " * 20] * 30_000
    openai_stub.behaviour.prompt_tokens, openai_stub.behaviour.completion_tokens = 30, 30_000
    # Reconcile runs every second and returns a hold one second past its deadline. The
    # deadline leaves a busy machine ample time to relay the whole stream.
    with service(database, stubs, PROVIDER_TIMEOUT=5, STREAM_TIMEOUT=30, HOLD_GRACE_SECONDS=1,
                 RECONCILE_INTERVAL=1, CLIENT_IDLE_TIMEOUT=2, LOG_LEVEL="INFO") as live:
        headers, user_id = live_user(live.url, "10")
        key = httpx.post(f"{live.url}/api/v1/access-keys", headers=headers,
                         json={"name": "slow", "spend_limit": "0.30", "spend_limit_period": "total"}).json()
        sock = raw_request(live.url, "/v1/chat/completions", bearer(key["key"]),
                           {"model": GPT_41, "max_tokens": 32768, "stream": True,
                            "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "Write at length."}]}, receive_buffer=4096)
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        # Until the call is settled (in the old way, past the stream's deadline and grace).
        if client == "slow":
            first += read_slowly_until(sock, lambda: settled_now(database, user_id))
        rows = settled_calls(database, user_id)
        rest = read_to_the_end(sock)
        sock.close()
        keys = httpx.get(f"{live.url}/api/v1/access-keys", headers=headers).json()["access_keys"]
        log = stop_and_read_log(live)

    charge = cost(GPT_41, 30, 30_000)
    assert [(charged, metadata.get("kind"), metadata.get("usage")) for _, charged, metadata in rows] == [
        (charge, "settle", None)], "billed on the provider's usage, by the settle, not returned by reconcile"
    assert keys[0]["spent"] == format_money(charge)
    streamed = first + rest
    assert b"data: [DONE]" not in streamed and len(streamed) < 30_000 * 100, "the client was cut off"
    ends = [line for line in log if line.get("message") == "stream"]
    assert len(ends) == 1 and ends[0]["outcome"] == "completed"
    assert ends[0]["client_cut"] == "too slow"
    assert 0 < ends[0]["buffered_peak_bytes"] <= OUTBOX_BYTES
    assert_ledger_clean(database)


ANTHROPIC_FAULTS = {
    # Cut after 8 of 20 deltas: message_start's input only.
    "cut": {"cut_after_chunks": 8},
    # Complete, but message_delta carries no usage.
    "no usage in message_delta": {"usage_in_message_delta": False},
}


@pytest.mark.parametrize("fault", ANTHROPIC_FAULTS)
@pytest.mark.parametrize("client", ["/v1/messages", "session"])
def test_anthropic_output_is_estimated_from_all_it_sent_unless_message_delta_counts_it(database, stubs, fault,
                                                                                         client):
    anthropic_stub = stubs[1]
    for name, value in ANTHROPIC_FAULTS[fault].items():
        setattr(anthropic_stub.behaviour, name, value)
    anthropic_stub.behaviour.chunks = ["héllo ", "wörld "] * 10
    anthropic_stub.behaviour.prompt_tokens, anthropic_stub.behaviour.completion_tokens = 20, 20
    with service(database, stubs, PROVIDER_TIMEOUT=5) as live:
        headers, user_id = live_user(live.url, "5")
        ask = {"content": "Say hello.", "max_tokens": 256, "stream": True}
        if client == "session":
            session = httpx.post(f"{live.url}/api/v1/chat/sessions", json={"model_id": HAIKU},
                                 headers=headers).json()
            url = f"{live.url}/api/v1/chat/sessions/{session['id']}/messages"
        else:
            url = f"{live.url}/v1/messages"
            ask = {"model": HAIKU, "max_tokens": 256, "stream": True,
                   "messages": [{"role": "user", "content": ask["content"]}]}
        with httpx.stream("POST", url, json=ask, headers=headers, timeout=30) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        rows = settled_calls(database, user_id)

    delivered = "".join(event.get("content") or event.get("delta", {}).get("text", "") for event in events)
    sent = "".join(anthropic_stub.behaviour.chunks[:8] if fault == "cut" else anthropic_stub.behaviour.chunks)
    assert delivered == sent
    output_estimate = len(sent.encode())  # 7 bytes a delta, though 6 characters
    assert [(charged, metadata.get("usage")) for _, charged, metadata in rows] == [
        (cost(HAIKU, 20, output_estimate), "estimated")], "the input as message_start said, the output estimated"
    if client == "session":
        saved = database.query("SELECT prompt_tokens, completion_tokens FROM chat_history ORDER BY id")
        assert saved == [(20, 0), (0, output_estimate)]
    assert_ledger_clean(database)


def test_an_estimate_counts_the_utf8_bytes_of_what_came(database, stubs):
    openai_stub = stubs[0]
    openai_stub.behaviour.chunks = ["héllo ", "wörld ", "never sent"]
    openai_stub.behaviour.with_usage = False
    openai_stub.behaviour.cut_after_chunks = 2
    messages = [{"role": "user", "content": "Hi"}]
    with service(database, stubs, PROVIDER_TIMEOUT=5) as live:
        headers, user_id = live_user(live.url, "5")
        with httpx.stream("POST", f"{live.url}/v1/chat/completions", headers=headers, timeout=30,
                          json={"model": GPT_4O_MINI, "max_tokens": 100, "stream": True,
                                "messages": messages}) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        rows = settled_calls(database, user_id)

    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices")) == "héllo wörld "
    assert events[-1]["error"]["code"] == "provider_error", "a cut stream ends in an error event"
    prompt_estimate = prompt_tokens_upper_bound(messages)
    charge = cost(GPT_4O_MINI, prompt_estimate, 14)  # 14 bytes in 12 characters
    assert [(charged, metadata.get("usage")) for _, charged, metadata in rows] == [(charge, "estimated")]
    assert f"charged: {format_money(charge)})" in events[-1]["error"]["message"], "it says what was charged"
    assert_ledger_clean(database)
