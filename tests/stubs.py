"""Provider stubs: real HTTP servers on 127.0.0.1 speaking the OpenAI Chat
Completions and Anthropic Messages wire formats, told by the test how to answer
(normally, with an error status, after a stall, without usage, or garbled; with
any reply text, NUL included, and any usage counts, absurd ones included; held
until the test opens a gate; or dripping the body one byte at a time)."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hundreds of clients may connect at once; the default backlog of 5 would
    # make the kernel drop their SYNs and retry a second later.
    request_queue_size = 1024


class Behaviour:
    def __init__(self):
        self.status = 200
        self.stall_seconds = 0.0
        self.prompt_tokens = 11
        self.completion_tokens = 7
        self.with_usage = True
        self.garbled = False
        self.reply = "Hello from the stub."
        # Seconds between the body's bytes (headers go at once); 0 sends it whole.
        self.drip_seconds = 0.0
        # When set: the answer waits until the test opens the gate.
        self.gate = None

    def hold_answers(self):
        """Answers wait for the returned gate to be set."""
        self.gate = threading.Event()
        return self.gate


class StubProvider:
    """One stub server; `requests` records what it was sent."""

    path = None
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
        if self.behaviour.gate is not None:
            self.behaviour.gate.set()  # a handler still held by a failed test goes
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
                behaviour = stub.behaviour
                if behaviour.gate is not None:
                    behaviour.gate.wait()
                if behaviour.stall_seconds:
                    time.sleep(behaviour.stall_seconds)
                if self.path != stub.path:
                    return self._send(404, {"error": {"message": "no such route"}})
                if not stub.authorised(self.headers):
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if behaviour.status != 200:
                    return self._send(behaviour.status, {"error": {"message": "stub error"}})
                if behaviour.garbled:
                    return self._send(200, b"{not json")
                return self._send(200, stub.answer(body, behaviour))

            def _send(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                drip = stub.behaviour.drip_seconds
                if not drip:
                    self.wfile.write(data)
                    return
                self.wfile.flush()
                try:
                    for byte in data:
                        time.sleep(drip)
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with stub._lock:
                        stub.abandoned += 1
                    self.close_connection = True

        return Handler


class OpenAIStub(StubProvider):
    path = "/v1/chat/completions"

    def authorised(self, headers):
        return headers.get("Authorization", "").startswith("Bearer sk-")

    def answer(self, body, behaviour):
        reply = {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
                 "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": behaviour.reply},
                              "finish_reason": "stop"}]}
        if behaviour.with_usage:
            reply["usage"] = {"prompt_tokens": behaviour.prompt_tokens,
                              "completion_tokens": behaviour.completion_tokens,
                              "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens}
        return reply


class AnthropicStub(StubProvider):
    path = "/v1/messages"

    def authorised(self, headers):
        return headers.get("x-api-key", "").startswith("sk-ant-") and headers.get("anthropic-version") == "2023-06-01"

    def answer(self, body, behaviour):
        reply = {"id": "msg_stub", "type": "message", "role": "assistant", "model": body["model"],
                 "content": [{"type": "text", "text": behaviour.reply}],
                 "stop_reason": "end_turn", "stop_sequence": None}
        if behaviour.with_usage:
            reply["usage"] = {"input_tokens": behaviour.prompt_tokens, "output_tokens": behaviour.completion_tokens}
        return reply


def main():
    """Serves one stub on its own (for the benchmarks): python -m tests.stubs openai PORT [STALL_SECONDS]."""
    import sys
    kind, port = sys.argv[1], int(sys.argv[2])
    stub = {"openai": OpenAIStub, "anthropic": AnthropicStub}[kind](port)
    stub.behaviour.stall_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
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
