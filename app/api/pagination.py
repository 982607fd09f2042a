"""`?limit=&cursor=` for every collection: opaque cursors, bounded pages."""
import base64
import binascii
import uuid
from datetime import datetime, timedelta

from flask import request

from app.errors import ValidationFailed

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
CURSOR_VERSION = "v1"
MAX_ZONE_OFFSET = timedelta(hours=16)


def page_size():
    """`?limit=` as an int in 1..100 (20 when absent), else a 400."""
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ValidationFailed(details={"limit": f"must be an integer from 1 to {MAX_PAGE_SIZE}"})
    return int(raw)


def encode_cursor(*parts):
    text = "|".join([CURSOR_VERSION, *(str(part) for part in parts)])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(*parsers):
    """The parts of `?cursor=`, each converted by its parser (which raises
    ValueError for a bad part); None for the first page; a 400 for a cursor this
    service did not issue."""
    raw = request.args.get("cursor")
    if raw is None:
        return None
    try:
        version, *parts = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().split("|")
        if version == CURSOR_VERSION and len(parts) == len(parsers):
            return tuple(_storable(parse(part)) for parse, part in zip(parsers, parts))
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        pass
    raise ValidationFailed(details={"cursor": "is not a cursor this service issued"})


def _storable(part):
    """A cursor's part as PostgreSQL takes it. Python reads zone offsets up to
    ±23:59 and in fractions of a second, PostgreSQL under ±16:00 in whole
    seconds; a time without a zone is none this service issued either."""
    if isinstance(part, datetime):
        offset = part.utcoffset()
        if offset is None or abs(offset) >= MAX_ZONE_OFFSET or offset.microseconds:
            raise ValueError(f"no time this service issued: {part}")
    return part


def row_id(text):
    """A positive bigint id."""
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 2 ** 63):
        raise ValueError(text)
    return int(text)


def newest_first(fetch):
    """(the page, next_cursor) of a collection listed newest first by
    (created_at, id): `fetch(limit, after)` gives up to `limit` rows after the
    cursor's (created_at, id), or from the newest when `after` is None."""
    limit = page_size()
    rows = fetch(limit + 1, decode_cursor(datetime.fromisoformat, uuid.UUID))
    return paginate(rows, limit, lambda last: encode_cursor(last["created_at"].isoformat(), last["id"]))


def paginate(rows, limit, cursor_of):
    """(the page, next_cursor): rows holds up to limit + 1 rows, the extra one
    only telling that another page follows."""
    page = rows[:limit]
    return page, (cursor_of(page[-1]) if len(rows) > limit else None)
