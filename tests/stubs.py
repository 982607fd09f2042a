"""Provider stubs: real HTTP servers on 127.0.0.1 speaking the OpenAI Chat
Completions and Anthropic Messages wire formats, told by the test how to answer
(normally, with an error status, after a stall, without usage, or garbled; with
any reply text, NUL included, and any usage counts, absurd ones included;
calling tools; reporting prompt-cache reads and writes and reasoning tokens;
showing thinking with its signature (Anthropic); held until the test opens a
gate; or dripping the body one byte at a time; each turn of a conversation its
own way, from a script). Asked for a stream (`"stream": true`), they stream the
reply in their real event formats, tool calls and thinking included, and can
cut it short or end it with an error event."""
import copy
import hashlib
import hmac
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


# In a stub's stream of events: close the connection here, without the end.
CUT = object()
ARGUMENT_PIECES = 3


def pieces(text, count=ARGUMENT_PIECES):
    """`text` in `count` pieces (some maybe empty), as a provider streams a tool's arguments."""
    size = -(-len(text) // count) or 1
    return [text[start:start + size] for start in range(0, max(len(text), 1), size)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hundreds of clients may connect at once; the default backlog of 5 would
    # make the kernel drop their SYNs and retry a second later.
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        """A client hanging up mid-answer is expected (a test's stream cut short,
        a timeout passed): nothing to report. Anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class Behaviour:
    def __init__(self):
        self.status = 200
        # An error answer's message and Retry-After header (None: none sent).
        self.error_message = "stub error"
        self.retry_after = None
        self.stall_seconds = 0.0
        # The usage, each in the provider's own convention: OpenAI's
        # prompt_tokens count the cached ones too, Anthropic's input_tokens
        # neither those read (cache_read_tokens) nor those written (for 5
        # minutes, cache_write_tokens, or an hour, cache_write_1h_tokens;
        # OpenAI reports no writes). reasoning_tokens: OpenAI's count of them
        # within completion_tokens (None: not reported).
        self.prompt_tokens = 11
        self.completion_tokens = 7
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.cache_write_1h_tokens = 0
        self.reasoning_tokens = None
        self.with_usage = True
        # Anthropic streams: whether message_delta carries the output's usage
        # (message_start always has the input's, as the real API sends it).
        self.usage_in_message_delta = True
        self.garbled = False
        self.reply = "Hello from the stub."
        # Why the reply ended, in the format's own words (None: it was done:
        # "stop" / "end_turn"), and the stop sequence Anthropic names.
        self.stop_reason = None
        self.stop_sequence = None
        # Seconds between the body's bytes (headers go at once); 0 sends it whole.
        self.drip_seconds = 0.0
        # When set: the answer waits until the test opens the gate.
        self.gate = None
        # Streamed replies: the text deltas (None: the reply's words), a pause
        # before each, and after how many deltas the stream is cut short (the
        # connection closed without the end) or ends with an error event.
        self.chunks = None
        self.chunk_delay_seconds = 0.0
        # When set: the deltas after the first wait until the test opens this gate.
        self.rest_of_stream_gate = None
        self.cut_after_chunks = None
        self.error_event_after_chunks = None
        # The tools the reply calls: (id, name, arguments as JSON text), the
        # arguments streamed in ARGUMENT_PIECES pieces.
        self.tool_calls = []
        # Anthropic: the thinking blocks before the reply's text, each
        # (thinking, signature), or ("redacted", data); the thinking streamed
        # in ARGUMENT_PIECES pieces, then its signature.
        self.thinking = []
        # Each request's own changes to this behaviour, in order (then this one's);
        # or, when set, a function of the request's body that gives them.
        self.script = []
        self.respond = None

    def for_request(self, body):
        """The behaviour for a request with `body`: this one, changed by the
        script's next turn or by what `respond` says."""
        changes = self.respond(body) if self.respond else self.script.pop(0) if self.script else {}
        if not changes:
            return self
        turn = copy.copy(self)
        for name, value in changes.items():
            setattr(turn, name, value)
        return turn

    def deltas(self):
        return self.chunks if self.chunks is not None else re.findall(r"\s*\S+|\s+", self.reply)

    def hold_answers(self):
        """Answers wait for the returned gate to be set."""
        self.gate = threading.Event()
        return self.gate


class StubProvider:
    """One stub server; `requests` records what it was sent."""

    path = None
    count_path = None  # where the provider counts a prompt's tokens, if it does
    key_header = None

    def __init__(self, port=0):
        self.behaviour = Behaviour()
        self.requests = []
        # Replies whose client hung up before the last byte.
        self.abandoned = 0
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def reset(self):
        for gate in (self.behaviour.gate, self.behaviour.rest_of_stream_gate):
            if gate is not None:
                gate.set()  # a handler still held by a failed test goes
        self.behaviour = Behaviour()
        with self._lock:
            self.requests.clear()
            self.abandoned = 0

    def wait_for_requests(self, count, timeout=10):
        """Waits until `count` requests have arrived; False when they did not in time."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stream_events(self, body, behaviour):
        """The encoded events of a streamed reply, CUT where it is cut short."""
        yield from self.opening_events(body, behaviour)
        deltas = behaviour.deltas()
        for sent in range(len(deltas) + 1):
            if sent == behaviour.cut_after_chunks:
                yield CUT
                return
            if sent == behaviour.error_event_after_chunks:
                yield self.error_event()
                return
            if sent < len(deltas):
                if sent == 1 and behaviour.rest_of_stream_gate is not None:
                    behaviour.rest_of_stream_gate.wait()
                time.sleep(behaviour.chunk_delay_seconds)
                yield self.delta_event(body, behaviour, deltas[sent])
        yield from self.closing_events(body, behaviour)

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without it a two-write response on a kept-alive connection waits
            # for a delayed ACK (about 40 ms) and every timing is wrong.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                behaviour = stub.behaviour.for_request(body)
                if behaviour.gate is not None:
                    behaviour.gate.wait()
                if behaviour.stall_seconds:
                    time.sleep(behaviour.stall_seconds)
                path = urlsplit(self.path).path
                if path not in (stub.path, stub.count_path):
                    return self._send(404, {"error": {"message": "no such route"}})
                if not stub.authorised(self.headers):
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if path == stub.count_path and behaviour.status == 200:
                    return self._send(200, {"input_tokens": behaviour.prompt_tokens})
                if behaviour.status != 200:
                    retry_after = {} if behaviour.retry_after is None else {"Retry-After": str(behaviour.retry_after)}
                    return self._send(behaviour.status, {"error": {"message": behaviour.error_message}}, retry_after)
                if behaviour.garbled:
                    return self._send(200, b"{not json")
                if body.get("stream") is True:
                    return self._stream(body, behaviour)
                return self._send(200, stub.answer(body, behaviour))

            def _send(self, status, payload, headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if not stub.behaviour.drip_seconds:
                    self.wfile.write(data)
                    return
                self.wfile.flush()
                self._write_or_abandon(data)

            def _stream(self, body, behaviour):
                """The reply as server-sent events in chunked transfer encoding;
                cut short means the connection closes without the last chunk."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    return self._abandon()
                for event in stub.stream_events(body, behaviour):
                    if event is CUT:
                        self.close_connection = True
                        return
                    if not self._write_or_abandon(b"%x\r\n%s\r\n" % (len(event), event)):
                        return
                self._write_or_abandon(b"0\r\n\r\n")

            def _write_or_abandon(self, data):
                """Writes at once or byte by byte; False (and counted) when the
                client hung up."""
                drip = stub.behaviour.drip_seconds
                try:
                    for piece in ([bytes([byte]) for byte in data] if drip else [data]):
                        time.sleep(drip)
                        self.wfile.write(piece)
                        self.wfile.flush()
                    return True
                except (BrokenPipeError, ConnectionResetError):
                    return self._abandon()

            def _abandon(self):
                with stub._lock:
                    stub.abandoned += 1
                self.close_connection = True
                return False

        return Handler


class OpenAIStub(StubProvider):
    path = "/v1/chat/completions"

    def authorised(self, headers):
        return headers.get("Authorization", "").startswith("Bearer sk-")

    def answer(self, body, behaviour):
        message = {"role": "assistant", "content": behaviour.reply if behaviour.reply or not behaviour.tool_calls
                   else None}
        if behaviour.tool_calls:
            message["tool_calls"] = [{"id": call_id, "type": "function",
                                      "function": {"name": name, "arguments": arguments}}
                                     for call_id, name, arguments in behaviour.tool_calls]
        reply = {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
                 "model": body["model"],
                 "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason(behaviour)}]}
        if behaviour.with_usage:
            reply["usage"] = self._usage(behaviour)
        return reply

    @staticmethod
    def _usage(behaviour):
        usage = {"prompt_tokens": behaviour.prompt_tokens, "completion_tokens": behaviour.completion_tokens,
                 "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": behaviour.cache_read_tokens, "audio_tokens": 0}}
        if behaviour.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": behaviour.reasoning_tokens}
        return usage

    def opening_events(self, body, behaviour):
        yield self._chunk(body, {"role": "assistant", "content": ""}, None)

    def delta_event(self, body, behaviour, text):
        return self._chunk(body, {"content": text}, None)

    def closing_events(self, body, behaviour):
        for index, (call_id, name, arguments) in enumerate(behaviour.tool_calls):
            first, *rest = pieces(arguments)
            yield self._chunk(body, {"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                                     "function": {"name": name, "arguments": first}}]}, None)
            for piece in rest:
                yield self._chunk(body, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
        yield self._chunk(body, {}, self._finish_reason(behaviour))
        if body.get("stream_options", {}).get("include_usage") and behaviour.with_usage:
            yield _data({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": body["model"], "choices": [], "usage": self._usage(behaviour)})
        yield b"data: [DONE]\n\n"

    @staticmethod
    def _finish_reason(behaviour):
        return behaviour.stop_reason or ("tool_calls" if behaviour.tool_calls else "stop")

    def error_event(self):
        return _data({"error": {"message": "The server had an error while processing your request.",
                                "type": "server_error", "param": None, "code": None}})

    def _chunk(self, body, delta, finish_reason):
        chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": body["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if body.get("stream_options", {}).get("include_usage"):
            chunk["usage"] = None
        return _data(chunk)


class AnthropicStub(StubProvider):
    path = "/v1/messages"
    count_path = "/v1/messages/count_tokens"

    def authorised(self, headers):
        return headers.get("x-api-key", "").startswith("sk-ant-") and headers.get("anthropic-version") == "2023-06-01"

    def answer(self, body, behaviour):
        content = [_thinking_block(*block) for block in behaviour.thinking]
        content += [{"type": "text", "text": behaviour.reply}] if behaviour.reply or not behaviour.tool_calls else []
        content += [{"type": "tool_use", "id": call_id, "name": name, "input": json.loads(arguments)}
                    for call_id, name, arguments in behaviour.tool_calls]
        reply = {"id": "msg_stub", "type": "message", "role": "assistant", "model": body["model"],
                 "content": content, "stop_reason": self._stop_reason(behaviour),
                 "stop_sequence": behaviour.stop_sequence}
        if behaviour.with_usage:
            reply["usage"] = {**self._input_usage(behaviour), "output_tokens": behaviour.completion_tokens}
        return reply

    @staticmethod
    def _input_usage(behaviour):
        return {"input_tokens": behaviour.prompt_tokens,
                "cache_creation_input_tokens": behaviour.cache_write_tokens + behaviour.cache_write_1h_tokens,
                "cache_read_input_tokens": behaviour.cache_read_tokens,
                "cache_creation": {"ephemeral_5m_input_tokens": behaviour.cache_write_tokens,
                                   "ephemeral_1h_input_tokens": behaviour.cache_write_1h_tokens}}

    def opening_events(self, body, behaviour):
        message = {"id": "msg_stub", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                   "stop_reason": None, "stop_sequence": None}
        if behaviour.with_usage:
            message["usage"] = {**self._input_usage(behaviour), "output_tokens": 1}
        yield _event("message_start", {"type": "message_start", "message": message})
        for index, block in enumerate(behaviour.thinking):
            yield from _thinking_events(index, _thinking_block(*block))
        yield _event("content_block_start", {"type": "content_block_start", "index": len(behaviour.thinking),
                                             "content_block": {"type": "text", "text": ""}})
        yield _event("ping", {"type": "ping"})

    def delta_event(self, body, behaviour, text):
        return _event("content_block_delta", {"type": "content_block_delta", "index": len(behaviour.thinking),
                                              "delta": {"type": "text_delta", "text": text}})

    def closing_events(self, body, behaviour):
        yield _event("content_block_stop", {"type": "content_block_stop", "index": len(behaviour.thinking)})
        for index, (call_id, name, arguments) in enumerate(behaviour.tool_calls, start=len(behaviour.thinking) + 1):
            yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": call_id, "name": name, "input": {}}})
            for piece in pieces(arguments):
                yield _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": "input_json_delta", "partial_json": piece}})
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        delta = {"type": "message_delta", "delta": {"stop_reason": self._stop_reason(behaviour),
                                                    "stop_sequence": behaviour.stop_sequence}}
        if behaviour.with_usage and behaviour.usage_in_message_delta:
            delta["usage"] = {"output_tokens": behaviour.completion_tokens}
        yield _event("message_delta", delta)
        yield _event("message_stop", {"type": "message_stop"})

    @staticmethod
    def _stop_reason(behaviour):
        return behaviour.stop_reason or ("tool_use" if behaviour.tool_calls else "end_turn")

    def error_event(self):
        return _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def _thinking_block(thinking, signature):
    if thinking == "redacted":
        return {"type": "redacted_thinking", "data": signature}
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def _thinking_events(index, block):
    """A thinking block as the Messages API streams it: opened empty, its
    text in pieces, its signature, closed (a redacted one comes whole)."""
    opened = block if block["type"] == "redacted_thinking" else {"type": "thinking", "thinking": "", "signature": ""}
    yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened})
    if block["type"] == "thinking":
        for piece in pieces(block["thinking"]):
            yield _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                 "delta": {"type": "thinking_delta", "thinking": piece}})
        yield _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                             "delta": {"type": "signature_delta", "signature": block["signature"]}})
    yield _event("content_block_stop", {"type": "content_block_stop", "index": index})


def _data(payload):
    return b"data: %s\n\n" % json.dumps(payload).encode()


def _event(name, payload):
    return b"event: %s\n" % name.encode() + _data(payload)


def main():
    """Serves one stub on its own (for the benchmarks):
    python -m tests.stubs openai PORT [STALL_SECONDS [CHUNK_DELAY_SECONDS [CHUNKS]]]
    (a streamed reply pauses that long before each delta; with CHUNKS, it sends
    that many one-word deltas instead of the reply's words)."""
    import sys
    kind, port = sys.argv[1], int(sys.argv[2])
    stub = {"openai": OpenAIStub, "anthropic": AnthropicStub}[kind](port)
    stub.behaviour.stall_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    stub.behaviour.chunk_delay_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    if len(sys.argv) > 5:
        stub.behaviour.chunks = ["word "] * int(sys.argv[5])
    stub.requests = _Discard()
    print(stub.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()


class _Discard(list):
    """A request log that keeps nothing, for long benchmark runs."""

    def append(self, item):
        pass


if __name__ == "__main__":
    main()


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1: keeps every request (headers and raw
    body), answers each with the next of `statuses` (then 200), and holds a
    request open while `gate` is closed (cleared). With `certificate` (the
    paths of a PEM certificate and its key) it answers over TLS."""

    def __init__(self, certificate=None):
        self.received, self.statuses = [], []
        self.gate = threading.Event()
        self.gate.set()
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.gate.wait(30)
                with receiver._changed:
                    receiver.received.append({"headers": dict(self.headers), "body": body, "path": self.path})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = _Server(("127.0.0.1", 0), Handler)
        scheme = "http"
        if certificate:
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificate)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.port = self.server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count, timeout=20):
        """The requests once at least `count` came (else those that did, after `timeout`)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def stop(self):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def verify_signature(secret, request):
    """Checks a received webhook request as a receiver should: the signature
    over the timestamp and the raw body under `secret`, a recent timestamp,
    and the delivery id the same in the header and the body."""
    headers = {name.lower(): value for name, value in request["headers"].items()}
    signed = headers["x-qm-timestamp"].encode() + b"." + request["body"]
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-qm-signature"], expected)
    assert abs(int(headers["x-qm-timestamp"]) - time.time()) < 300
    assert headers["x-qm-delivery-id"] == json.loads(request["body"])["id"]


class SMTPReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message."""

    def __init__(self):
        from aiosmtpd.controller import Controller
        from devtools.cluster import free_port

        self.messages = []
        self._changed = threading.Condition()
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with receiver._changed:
                    receiver.messages.append(envelope)
                    receiver._changed.notify_all()
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{self.port}"

    def wait_for(self, count, timeout=20):
        with self._changed:
            self._changed.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def stop(self):
        self.controller.stop()
