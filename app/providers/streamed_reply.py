"""A reply streamed as it is written, whatever the provider: iterating a Stream
yields its text deltas; once iteration ends it holds all the text delivered,
the token counts the provider reported (`prompt_tokens`, `completion_tokens`,
None where it reported none) and why it stopped (`ending`).

Until the first delta a stream fails as `complete` does (ProviderError,
ProviderUnreachable, ProviderTimeout), since nothing was delivered; after it,
any failure is a ProviderStreamCut, and `text` and the token counts keep what came."""
from app.providers.completion import ProviderError, ProviderStreamCut, ProviderTimeout, TextCleaner


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
        self.prompt_tokens = self.completion_tokens = None
        self._source = source or _NoConnection()
        self._deltas = read_deltas(self)
        self._cleaner = TextCleaner(provider)
        self._pieces = []

    @property
    def text(self):
        """All the text delivered so far."""
        return "".join(self._pieces)

    def note_usage(self, prompt_tokens, completion_tokens):
        """Counts from a usage event; one that lacks a count leaves the last one seen."""
        if prompt_tokens is not None:
            self.prompt_tokens = prompt_tokens
        if completion_tokens is not None:
            self.completion_tokens = completion_tokens

    def close(self):
        """Releases the connection before the end (the reply is then cut)."""
        self._source.close()

    def __iter__(self):
        try:
            for piece in self._deltas:
                yield from self._deliver(self._cleaner.clean(piece))
            yield from self._deliver(self._cleaner.finish())
        except (StreamBroken, ProviderError, ProviderTimeout) as error:
            raise self._failure(error) from None
        finally:
            self._source.close()

    def _deliver(self, text):
        if text:
            if not self._pieces:
                self._source.delivering()
            self._pieces.append(text)
            if len(self._pieces) >= PIECES_KEPT_APART:
                self._pieces = ["".join(self._pieces)]
            yield text

    def _failure(self, error):
        """The error to raise: as `complete` would before any text, a cut after."""
        if not self._pieces:
            return ProviderError(self.provider, 200, error.reason) if isinstance(error, StreamBroken) else error
        if isinstance(error, ProviderTimeout):
            return ProviderStreamCut(self.provider, "deadline passed")
        return ProviderStreamCut(self.provider, error.reason)
