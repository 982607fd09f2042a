"""A reply streamed as it is written, whatever the provider: iterating a Stream
yields its text deltas (strings), the pieces of its tool calls
(ToolCallDelta) and of its thinking (ThinkingDelta); once iteration ends it
holds all the text delivered, the tool calls (`tool_calls`), the thinking
(`thinking`), the token counts the provider reported (`usage`, as
Completion names them, None where it reported none) and why it stopped
(`ending`).

Until the first delta a stream fails as `complete` does (ProviderError,
ProviderUnreachable, ProviderTimeout), since nothing was delivered; after it,
any failure is a ProviderStreamCut, and `text` and the token counts keep what came."""
from app.providers.completion import USAGE_COUNTS, ProviderError, ProviderStreamCut, ProviderTimeout, TextCleaner
from app.providers.reasoning import ThinkingDelta, thinking_blocks
from app.providers.tools import ToolCall, ToolCallDelta


# A long reply is thousands of small pieces, each a string object several times
# its text's size: they are joined this often, so the text costs about its length.
PIECES_KEPT_APART = 1024


class StreamBroken(Exception):
    """The provider's stream went wrong in its own terms (an error event, a
    malformed event, no end event); `reason` says how."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class _NoConnection:
    """The source of a stream made without the network."""

    def delivering(self):
        pass

    def close(self):
        pass


class Stream:
    """`read_deltas(stream)` gives the provider's text pieces, noting usage and
    the finish reason on the stream as its events carry them; `source` is the
    connection they come from (`delivering()` once text is out, `close()`)."""

    def __init__(self, provider, read_deltas, source=None):
        self.provider = provider
        self.ending = None
        self.usage = dict.fromkeys(USAGE_COUNTS)
        self._source = source or _NoConnection()
        self._deltas = read_deltas(self)
        self._cleaner = TextCleaner(provider)
        self._pieces = []
        self._calls = {}  # index → [id, name, pieces of the arguments]
        self._thinking = []  # ThinkingDelta, as they came
        self._delivered = False

    @property
    def text(self):
        """All the text delivered so far."""
        return "".join(self._pieces)

    @property
    def tool_calls(self):
        """The tool calls delivered so far, in the order of their index."""
        return tuple(ToolCall(call_id or "", name or "", "".join(pieces))
                     for _, (call_id, name, pieces) in sorted(self._calls.items()))

    @property
    def thinking(self):
        """The ThinkingBlocks delivered so far."""
        return thinking_blocks(self._thinking)

    def note_usage(self, counts):
        """Counts from a usage event ({name in USAGE_COUNTS: count or None});
        one that lacks a count leaves the last one seen."""
        self.usage.update({name: count for name, count in counts.items() if count is not None})

    def close(self):
        """Releases the connection before the end (the reply is then cut)."""
        self._source.close()

    def __iter__(self):
        try:
            for piece in self._deltas:
                if isinstance(piece, ToolCallDelta):
                    yield self._delivering_call(piece)
                elif isinstance(piece, ThinkingDelta):
                    self._note_delivery()
                    self._thinking.append(piece)
                    yield piece
                else:
                    yield from self._deliver(self._cleaner.clean(piece))
            yield from self._deliver(self._cleaner.finish())
        except (StreamBroken, ProviderError, ProviderTimeout) as error:
            raise self._failure(error) from None
        finally:
            self._source.close()

    def _deliver(self, text):
        if text:
            self._note_delivery()
            self._pieces.append(text)
            if len(self._pieces) >= PIECES_KEPT_APART:
                self._pieces = ["".join(self._pieces)]
            yield text

    def _delivering_call(self, delta):
        self._note_delivery()
        call = self._calls.setdefault(delta.index, [None, None, []])
        call[0], call[1] = call[0] or delta.id, call[1] or delta.name
        call[2].append(delta.arguments)
        if len(call[2]) >= PIECES_KEPT_APART:
            call[2] = ["".join(call[2])]
        return delta

    def _note_delivery(self):
        if not self._delivered:
            self._delivered = True
            self._source.delivering()

    def _failure(self, error):
        """The error to raise: as `complete` would before anything was delivered, a cut after."""
        if not self._delivered:
            return ProviderError(self.provider, 200, error.reason) if isinstance(error, StreamBroken) else error
        if isinstance(error, ProviderTimeout):
            return ProviderStreamCut(self.provider, "deadline passed")
        return ProviderStreamCut(self.provider, error.reason)
