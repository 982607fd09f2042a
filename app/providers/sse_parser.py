"""Server-sent events, the framing both providers stream their replies in:
lines of `field: value`, an event ending at a blank line.

Written here, not taken from httpx-sse (0.4.3): its `SSELineDecoder.decode`
buffers an unterminated line without limit and takes text already decoded, so
refusing a hostile provider's endless line would mean our own UTF-8 decoding
and reaching into its `buffer`, no less code than this module."""
import re

from app.providers.streamed_reply import StreamBroken

# Far above any event a provider sends; a longer line is refused, not buffered.
MAX_LINE_BYTES = 1024 * 1024
# The spec's three line ends: CRLF, CR alone, LF.
_LINE_END = re.compile(rb"\r\n|\r|\n")


def sse_events(chunks):
    """(event name, data) for each complete event in the byte chunks; the name
    is "message" when the event gave none. An event cut off by the end of the
    chunks is dropped: its reader then misses its end event."""
    name, data = None, []
    for line in _lines(chunks):
        if not line:
            if data:
                yield name or "message", "\n".join(data)
            name, data = None, []
            continue
        field, _, value = line.partition(b":")
        value = _text(value[1:] if value.startswith(b" ") else value)
        if field == b"event":
            name = value
        elif field == b"data":
            data.append(value)


def _lines(chunks):
    """Each complete line in the byte chunks, without its end. A CR that ends
    a chunk may be half of a CRLF, so its line waits for the next byte."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        cut = len(pending) - pending.endswith(b"\r")
        *lines, rest = _LINE_END.split(pending[:cut])
        pending = rest + pending[cut:]
        if len(pending) > MAX_LINE_BYTES:
            raise StreamBroken("malformed event")
        yield from lines
    if pending.endswith(b"\r"):
        yield pending[:-1]


def _text(value):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamBroken("malformed event") from None
