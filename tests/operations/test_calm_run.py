"""A passing `make test` prints nothing alarming: the provider stubs take a
client hanging up as the ordinary event it is, and the tests' artefacts stay
out of .data/, the folder README says to back up."""
import json
import socket
import struct
import subprocess

from tests.browser import SHOTS
from tests.stubs import OpenAIStub
from tests.support import ROOT

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}).encode()
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: stub\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer sk-test\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


def test_a_client_hanging_up_on_a_stub_prints_no_traceback(capfd):
    stub = OpenAIStub()
    stub.server.daemon_threads = False  # so that stopping it waits for every answer to be written
    try:
        stub.behaviour.stall_seconds = 0.3  # the client is gone before the answer is written
        for _ in range(3):
            with socket.create_connection(stub.server.server_address) as client:
                client.sendall(REQUEST)
                # Closed with a reset, so the stub's write fails at once rather than into a buffer.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert stub.wait_for_requests(3)
    finally:
        stub.stop()
    assert "Traceback" not in capfd.readouterr().err


def test_the_tests_artefacts_live_outside_the_data_folder():
    assert ROOT / ".data" not in SHOTS.parents
    ignored = subprocess.run(["git", "check-ignore", "-q", str(SHOTS / "overview-1280.png")], cwd=ROOT)
    assert ignored.returncode == 0, "the screenshots' folder is not ignored by git"
