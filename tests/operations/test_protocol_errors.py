"""Answers gunicorn gives before the app sees a request, over raw sockets: the
one JSON error shape for requests it cannot parse, and `Connection: close` on a
413 whose body is left unread (gunicorn then drops the connection)."""
import json
import socket

import pytest

from tests.conftest import clean_database
from tests.support import LiveServer, settings_for


@pytest.fixture(scope="module")
def server(pg_server, template_db):
    with clean_database(pg_server, template_db) as database:
        live = LiveServer(settings_for(database.app_url), workers=1, threads=4)
        yield live
        live.stop()


def connect(server):
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_response(sock):
    """(status, headers with lower-case names, body bytes) of one response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def is_closed_by_server(sock):
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def assert_json_error(headers, body, code):
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "details"} and list(json.loads(body)) == ["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)


MALFORMED = {
    "a request line over 4094 bytes": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: q\r\n\r\n", 414, "uri_too_long"),
    "a 20 KB header": (b"GET /readyz HTTP/1.1\r\nHost: q\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
                       431, "headers_too_large"),
    "more than 100 headers": (b"GET /readyz HTTP/1.1\r\nHost: q\r\n"
                              + b"".join(b"X-H%d: 1\r\n" % n for n in range(120)) + b"\r\n", 431, "headers_too_large"),
    "a request line that is not HTTP": (b"HELLO THERE\r\n\r\n", 400, "bad_request"),
    "a header name with a space": (b"GET /readyz HTTP/1.1\r\nHost: q\r\nBad Name: 1\r\n\r\n", 400, "bad_request"),
}


@pytest.mark.parametrize("raw, status, code", MALFORMED.values(), ids=MALFORMED.keys())
def test_requests_gunicorn_cannot_parse_get_the_json_error_shape(server, raw, status, code):
    with connect(server) as sock:
        sock.sendall(raw)
        got_status, headers, body = read_response(sock)
        assert got_status == status
        assert_json_error(headers, body, code)
        assert headers["connection"] == "close"
        assert is_closed_by_server(sock)


def test_a_body_over_the_limit_gets_413_with_connection_close(server):
    declared = 2 * 1024 * 1024
    with connect(server) as sock:
        # More of the body than gunicorn drains (64 KiB), far less than declared.
        sock.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % declared + b"x" * 200_000)
        status, headers, body = read_response(sock)
        assert status == 413
        assert_json_error(headers, body, "payload_too_large")
        assert headers["connection"] == "close", "the server drops this connection, so it must say so"
        assert is_closed_by_server(sock)


def test_a_request_within_the_limit_keeps_its_connection(server):
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
            status, headers, body = read_response(sock)
            assert status == 400 and headers["connection"] == "keep-alive"
            assert_json_error(headers, body, "validation_error")
