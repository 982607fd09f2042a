"""Server-sent events, the framing both providers stream their replies in:
lines of `field: value`, an event ending at a blank line.

Written here, not taken from httpx-sse (0.4.3): its `SSELineDecoder.decode`
buffers an unterminated line without limit and takes text already decoded, so
refusing a hostile provider's endless line would mean our own UTF-8 decoding
and reaching into its `buffer`, no less code than this module."""
from app.providers.stream import StreamBroken

# Far above any event a provider sends; a longer line is refused, not buffered.
MAX_LINE_BYTES = 1024 * 1024


def sse_events(chunks):
    """(event name, data) for each complete event in the byte chunks; the name
    is "message" when the event gave none. An event cut off by the end of the
    chunks is dropped: its reader then misses its end event."""
    pending, name, data = b"", None, []
    for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > MAX_LINE_BYTES:
            raise StreamBroken("malformed event")
        for line in lines:
            line = line.rstrip(b"\r")
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


def _text(value):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamBroken("malformed event") from None
