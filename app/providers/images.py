"""Images in a prompt: what a client may send (an https: URL, passed on and
never fetched here, or base64 data of a JPEG, PNG, GIF or WebP), their size
read from their first bytes, and the most input tokens each provider bills
for one, so that a hold is never below the charge.

The figures come from the providers' own documentation:

- Anthropic, "Vision" (docs.anthropic.com/en/docs/build-with-claude/vision):
  an image costs about width × height / 750 tokens (newer pages: one token per
  28 × 28 px patch); one whose long edge is over 1568 px, or that would cost
  more than about 1,600 tokens, is first scaled down, aspect kept. The
  largest size its table lists, 784 × 1568 px, is about 1,639 tokens.
  ANTHROPIC_MAX_TOKENS bounds that with room for "about".
- OpenAI, "Images and vision", "Calculating costs" (platform.openai.com/docs/
  guides/images-vision): detail "low" costs the base tokens; "high" (and
  "auto", which may choose it) the base plus a price per 512 px tile, after
  the image is scaled to fit 2048 × 2048, then its shortest side down to 768
  px: at most 2 × 4 tiles. Base and tile are 85 and 170 tokens for gpt-4o,
  gpt-4.1 and gpt-4.5; 75 and 150 for o1 and o3; 2,833 and 5,667 for
  gpt-4o-mini (billed as many more tokens so an image costs what it does on
  gpt-4o; OpenAI says these do not count against the context window). gpt-4.1-mini,
  gpt-4.1-nano and o4-mini count 32 px patches instead (at most 1,536, the
  image scaled down to fit), multiplied by 1.62, 2.46 and 1.72 to bill.
  A model of an OpenAI-format server this table does not name is held at
  the largest rule (gpt-4o-mini's)."""
import base64
import binascii
import math
from dataclasses import dataclass, field
from fractions import Fraction
from urllib.parse import urlsplit

# The types both providers take.
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
DETAILS = ("auto", "low", "high")
# Around each image, what a provider's prompt adds (markers, the block's place):
# not documented by either; a margin on top of every figure below.
IMAGE_OVERHEAD_TOKENS = 32

ANTHROPIC_TOKENS_PER_PIXELS = 750
ANTHROPIC_PATCH_PX = 28
ANTHROPIC_MAX_TOKENS = 1_700

OPENAI_TILE_PX, OPENAI_FIT_PX, OPENAI_SHORT_SIDE_PX = 512, 2048, 768
OPENAI_PATCH_PX, OPENAI_MAX_PATCHES = 32, 1_536


@dataclass(frozen=True)
class Image:
    """An image of a prompt: `url` (https:) or `media_type` with base64
    `data`; OpenAI's `detail` when the client gave one; its size in pixels
    when its bytes tell it (None for a URL)."""
    url: str | None = None
    media_type: str | None = None
    data: str | None = field(default=None, repr=False)
    detail: str | None = None
    width: int | None = None
    height: int | None = None

    def data_url(self):
        return f"data:{self.media_type};base64,{self.data}"


class ImageRefused(ValueError):
    """An image that cannot be sent; the message says why, for its field."""


def image_of_url(url, detail=None):
    """The Image an OpenAI image_url part names: an https: URL, or a data: URL
    of base64 image data."""
    if url[:5].lower() == "data:":
        header, comma, data = url[5:].partition(",")
        media_type, *parameters = header.split(";")
        if not comma or not parameters or parameters[-1].lower() != "base64":
            raise ImageRefused("must be a data: URL of base64 data (data:image/png;base64,…)")
        return image_of_base64(media_type.strip().lower(), data, detail)
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ImageRefused("must be an https: or data: URL")
    return Image(url=url, detail=detail)


def image_of_base64(media_type, data, detail=None):
    """The Image of base64 `data` said to be of `media_type`: refused unless
    it decodes and its bytes are an image of that type."""
    if media_type not in MEDIA_TYPES:
        raise ImageRefused(f"must be one of {', '.join(MEDIA_TYPES)}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused("is not valid base64") from None
    kind, width, height = measure(raw)
    if kind is None:
        raise ImageRefused("is no JPEG, PNG, GIF or WebP image")
    if kind != media_type:
        raise ImageRefused(f"holds an {kind} image, not {media_type}")
    return Image(media_type=media_type, data=data, detail=detail, width=width, height=height)


# ----------------------------------------------------------------- size from the first bytes

def measure(raw):
    """(media type, width, height) of image bytes; the size None where the
    bytes do not tell it, all None when they are no image of MEDIA_TYPES."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("image/png", *_size(raw, 16, 4, "big", 20))
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return ("image/gif", *_size(raw, 6, 2, "little", 8))
    if raw.startswith(b"\xff\xd8\xff"):
        return ("image/jpeg", *_jpeg_size(raw))
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ("image/webp", *_webp_size(raw))
    return None, None, None


def _size(raw, at, length, order, height_at):
    if len(raw) < height_at + length:
        return None, None
    width = int.from_bytes(raw[at:at + length], order)
    height = int.from_bytes(raw[height_at:height_at + length], order)
    return (width, height) if width and height else (None, None)


# JPEG's start-of-frame markers (baseline, progressive, lossless, …), which carry the size.
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(raw):
    at = 2
    while at + 9 <= len(raw):
        if raw[at] != 0xFF:
            return None, None
        marker = raw[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in _JPEG_FRAMES:
            height, width = int.from_bytes(raw[at + 5:at + 7], "big"), int.from_bytes(raw[at + 7:at + 9], "big")
            return (width, height) if width and height else (None, None)
        at += 2 + int.from_bytes(raw[at + 2:at + 4], "big")
    return None, None


def _webp_size(raw):
    chunk = raw[12:16]
    if chunk == b"VP8 " and len(raw) >= 30 and raw[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(raw[26:28], "little") & 0x3FFF, int.from_bytes(raw[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and len(raw) >= 25 and raw[20] == 0x2F:
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(raw) >= 30:
        return int.from_bytes(raw[24:27], "little") + 1, int.from_bytes(raw[27:30], "little") + 1
    return None, None


# ----------------------------------------------------------------- tokens

@dataclass(frozen=True)
class ImageTokens:
    """The most tokens one image can be: `billed` (what the provider charges
    for it) and `in_context` (what it takes of the context window)."""
    billed: int
    in_context: int


def anthropic_image_tokens(image):
    if image.width is None:
        tokens = ANTHROPIC_MAX_TOKENS
    else:
        area = math.ceil(image.width * image.height / ANTHROPIC_TOKENS_PER_PIXELS)
        patches = math.ceil(image.width / ANTHROPIC_PATCH_PX) * math.ceil(image.height / ANTHROPIC_PATCH_PX)
        tokens = min(max(area, patches), ANTHROPIC_MAX_TOKENS)
    return ImageTokens(tokens + IMAGE_OVERHEAD_TOKENS, tokens + IMAGE_OVERHEAD_TOKENS)


@dataclass(frozen=True)
class _Tiles:
    base: int
    tile: int

    def tokens(self, image):
        tiles = _openai_tiles(image)
        return ImageTokens(self.base + self.tile * tiles, 85 + 170 * tiles)


@dataclass(frozen=True)
class _Patches:
    multiplier: Fraction

    def tokens(self, image):
        patches = _openai_patches(image)
        return ImageTokens(math.ceil(patches * self.multiplier), patches)


# A model name's longest prefix here chooses its rule.
OPENAI_IMAGE_RULES = {
    "gpt-4o-mini": _Tiles(2_833, 5_667),
    "gpt-4o": _Tiles(85, 170), "chatgpt-4o": _Tiles(85, 170), "gpt-4.5": _Tiles(85, 170),
    "gpt-4.1": _Tiles(85, 170),
    "gpt-4.1-mini": _Patches(Fraction("1.62")), "gpt-4.1-nano": _Patches(Fraction("2.46")),
    "o4-mini": _Patches(Fraction("1.72")),
    "o1": _Tiles(75, 150), "o3": _Tiles(75, 150),
}
OPENAI_UNKNOWN_MODEL_RULE = OPENAI_IMAGE_RULES["gpt-4o-mini"]


def openai_image_tokens(model_name, image):
    known = [prefix for prefix in OPENAI_IMAGE_RULES if model_name.startswith(prefix)]
    rule = OPENAI_IMAGE_RULES[max(known, key=len)] if known else OPENAI_UNKNOWN_MODEL_RULE
    counted = rule.tokens(image)
    return ImageTokens(counted.billed + IMAGE_OVERHEAD_TOKENS, counted.in_context + IMAGE_OVERHEAD_TOKENS)


def _openai_tiles(image):
    """512 px tiles of a "high" detail image after OpenAI's two scalings (at
    most 2 × 4, for an image whose size is unknown); none for "low"."""
    if image.detail == "low":
        return 0
    if image.width is None:
        return 2 * (OPENAI_FIT_PX // OPENAI_TILE_PX)
    width, height = Fraction(image.width), Fraction(image.height)
    scale = min(Fraction(1), Fraction(OPENAI_FIT_PX) / max(width, height))
    width, height = width * scale, height * scale
    scale = min(Fraction(1), Fraction(OPENAI_SHORT_SIDE_PX) / min(width, height))
    width, height = width * scale, height * scale
    return math.ceil(width / OPENAI_TILE_PX) * math.ceil(height / OPENAI_TILE_PX)


def _openai_patches(image):
    if image.width is None:
        return OPENAI_MAX_PATCHES
    patches = math.ceil(image.width / OPENAI_PATCH_PX) * math.ceil(image.height / OPENAI_PATCH_PX)
    return min(patches, OPENAI_MAX_PATCHES)
