"""Request ids, structured logs and the headers every response carries."""
import json
import logging
import re
import sys
import time
import uuid

from flask import g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# A client's own request id is kept when it is short and plain; else we make one.
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

access_log = logging.getLogger("qmarket.access")


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one."""

    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            entry["request_id"] = g.get("request_id")
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level):
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JSONFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        root.addHandler(handler)
    root.setLevel(level)


def register_request_hooks(app):
    @app.before_request
    def assign_request_id():
        g.started = time.perf_counter()
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if CLIENT_REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def finish_response(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        # Tokens and keys travel in these bodies: never stored by a cache.
        response.headers.setdefault("Cache-Control", "no-store")
        if response.mimetype == "application/json":
            response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
        # Path only: query strings and bodies may carry secrets and are never logged.
        access_log.info("request", extra={"fields": {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
            "user_id": str(g.get("user_id") or "") or None,
        }})
        return response
