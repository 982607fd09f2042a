"""Request ids, structured logs and the headers every response carries."""
import json
import logging
import re
import sys
import time
import traceback
import uuid

import psycopg2
from flask import g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# A client's own request id is kept when it is short and plain; else we make one.
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

access_log = logging.getLogger("qmarket.access")
# What a database error may say in a log: names, never values.
DATABASE_ERROR_NAMES = (("constraint", "constraint_name"), ("table", "table_name"), ("column", "column_name"),
                        ("type", "datatype_name"))


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

    def formatException(self, exc_info):
        return loggable_traceback(exc_info[1])


def describe_error(error):
    """An exception in words safe to log. A database driver error's message and
    DETAIL may quote the row that failed (a password hash, a sealed key), so it
    is named by its class, SQLSTATE and the names it concerns, never its text."""
    if not isinstance(error, psycopg2.Error):
        return f"{type(error).__name__}: {error}"
    names = [f"SQLSTATE {error.pgcode}"] if error.pgcode else []
    names += [f"{label} {getattr(error.diag, field)}" for label, field in DATABASE_ERROR_NAMES
              if getattr(error.diag, field)]
    return f"{type(error).__name__} ({', '.join(names) or 'no server details'})"


def loggable_traceback(error):
    """The traceback of `error` and of the exceptions that led to it, as Python
    prints it, with each exception described by describe_error()."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    parts = []
    for error in reversed(chain):
        if parts:
            parts.append("\nThe above exception was the direct cause of the following exception:\n\n"
                         if error.__cause__ is not None else
                         "\nDuring handling of the above exception, another exception occurred:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(error.__traceback__))
        parts.append(describe_error(error) + "\n")
    return "".join(parts).rstrip("\n")


def configure_logging(level):
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JSONFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        root.addHandler(handler)
    root.setLevel(level)


def note_user(user_id):
    """Names the request's user in its access-log line."""
    g.user_id = user_id


def request_id():
    """The current request's id (None outside a request)."""
    return g.get("request_id") if has_request_context() else None


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
        if response.mimetype == "application/json":  # the console's JSON errors keep the console's policy
            response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        # Path only: query strings and bodies may carry secrets and are never logged.
        access_log.info("request", extra={"fields": {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
            "user_id": str(g.get("user_id") or "") or None,
        }})
        return response
