"""/metrics on a port of its own (METRICS_PORT on METRICS_HOST, 127.0.0.1 by
default), apart from the API's, for a scraper on the same host or network.

gunicorn's master binds the port when it is ready (gunicorn.conf.py) and hands
the socket to a process of its own, this module, which answers `GET /metrics`
with every worker's figures (the multiprocess files they all write) and 404
to anything else. The master keeps no copy of the socket, so no worker ever
holds it. METRICS_TOKEN, when set, is asked for here too. The process ends
with the master."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST

ROOT = Path(__file__).resolve().parent.parent
STATUS_LINES = {200: "200 OK", 401: "401 Unauthorized", 404: "404 Not Found", 405: "405 Method Not Allowed"}
MESSAGES = {401: ("unauthorized", "Authentication is required."),
            404: ("not_found", "The requested resource does not exist."),
            405: ("method_not_allowed", "Only GET is allowed here.")}


def start(config):
    """Binds METRICS_HOST:METRICS_PORT and starts the process that serves it:
    the Popen, for `stop`. A port that cannot be bound ends the start, saying so."""
    host, port = config["METRICS_HOST"], config["METRICS_PORT"]
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(info[0], socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(info[4])
        listener.listen(64)
    except OSError as exc:
        sys.exit(f"gunicorn: METRICS_PORT {port} on METRICS_HOST {host} cannot be served: {exc.strerror or exc}")
    with listener:
        return subprocess.Popen([sys.executable, "-m", "app.metrics_listener", str(listener.fileno())],
                                pass_fds=(listener.fileno(),), cwd=ROOT)


def stop(process):
    """Ends the process; gunicorn's master may have reaped it already (it waits for any child)."""
    try:
        process.terminate()
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
    except (ProcessLookupError, ChildProcessError):
        pass


def application(token, refusal_status):
    """The WSGI app: GET /metrics, with `Authorization: Bearer <token>` when a token is set."""
    from app.metrics import bearer_accepted, exposition

    def answer(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            return _error(start_response, 404)
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _error(start_response, 405)
        if token and not bearer_accepted(environ.get("HTTP_AUTHORIZATION", ""), token):
            return _error(start_response, refusal_status)
        body = exposition()
        start_response(STATUS_LINES[200], [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]
    return answer


def _error(start_response, status):
    code, message = MESSAGES[status]
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    start_response(STATUS_LINES[status], [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _Server(ThreadingMixIn, WSGIServer):
    """Serves on a socket bound and listening already (the master's)."""
    daemon_threads = True

    def __init__(self, listener):
        self._listener = listener
        super().__init__(listener.getsockname()[:2], _Quiet)

    def server_bind(self):
        self.socket.close()
        self.socket = self._listener
        self.server_name, self.server_port = self.socket.getsockname()[:2]
        self.setup_environ()

    def server_activate(self):
        pass


def _end_with(parent):
    """Ends this process once its parent, gunicorn's master, is gone (even killed)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main():
    from app.config import load_config
    config = load_config(check_secrets=False)
    listener = socket.socket(fileno=int(sys.argv[1]))
    server = _Server(listener)
    server.set_app(application(config["METRICS_TOKEN"], config["METRICS_REFUSAL_STATUS"]))
    threading.Thread(target=_end_with, args=(os.getppid(),), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
