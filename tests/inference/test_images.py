"""Images through the inference API, driven by the official `openai` and
`anthropic` SDKs against the service under gunicorn and provider stubs that
speak each provider's real wire format: sent as base64 data or an https URL,
reaching each provider in its own shape from either format, plain and
streamed, and held at no less than the provider bills for them. The sizes
read from an image's bytes and the token figures are checked against the
providers' documented examples."""
import base64
import struct
import zlib
from decimal import Decimal

import pytest

from app.providers.images import (IMAGE_OVERHEAD_TOKENS, Image, anthropic_image_tokens, measure,
                                  openai_image_tokens)
from tests.support import cost
from tests.sdk_clients import (account, anthropic_client, assert_charged_exactly, close_clients,  # noqa: F401
                            openai_client, server)

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-20241022"
URL = "https://images.example.com/cat.png"


def png(width, height):
    """A real PNG of one colour."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x10\x20\x30" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def gif(width, height):
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def jpeg(width, height):
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    frame = b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + frame + b"\xff\xd9"


def webp(width, height, kind):
    if kind == "VP8X":
        chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (width - 1).to_bytes(3, "little") \
            + (height - 1).to_bytes(3, "little")
    elif kind == "VP8L":
        bits = (width - 1) | (height - 1) << 14
        chunk = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little")
    else:
        chunk = b"VP8 " + struct.pack("<I", 10) + b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def b64(raw):
    return base64.b64encode(raw).decode()


def data_url(raw, media_type="image/png"):
    return f"data:{media_type};base64,{b64(raw)}"


PHOTO = png(1024, 768)
LOOK = {"type": "text", "text": "What is in this picture?"}


def the_hold(server, user_id):
    (amount,), = server.database.query("SELECT amount FROM transactions WHERE user_id = %s AND type = 'hold'",
                                       (user_id,))
    return amount


def answered(stub, prompt_tokens, completion_tokens=6):
    stub.behaviour.reply = "A cat."
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = prompt_tokens, completion_tokens


def openai_text(client, stream, **asked):
    if stream:
        return "".join(chunk.choices[0].delta.content or "" for chunk in
                       client.chat.completions.create(**asked, stream=True) if chunk.choices)
    return client.chat.completions.create(**asked).choices[0].message.content


def anthropic_text(client, stream, **asked):
    if stream:
        with client.messages.stream(**asked) as events:
            return events.get_final_message().content[0].text
    return client.messages.create(**asked).content[0].text


# ----------------------------------------------------------------- what an image's bytes tell

@pytest.mark.parametrize("raw, expected", [
    (png(640, 480), ("image/png", 640, 480)),
    (gif(33, 17), ("image/gif", 33, 17)),
    (jpeg(1920, 1080), ("image/jpeg", 1920, 1080)),
    (webp(300, 200, "VP8X"), ("image/webp", 300, 200)),
    (webp(301, 201, "VP8L"), ("image/webp", 301, 201)),
    (webp(302, 202, "VP8 "), ("image/webp", 302, 202)),
    (b"\xff\xd8\xff\xe0\x00", ("image/jpeg", None, None)),   # a JPEG cut before its frame: size unknown
    (b"%PDF-1.7", (None, None, None)),
], ids=["png", "gif", "jpeg", "webp-vp8x", "webp-vp8l", "webp-vp8", "jpeg-no-frame", "not-an-image"])
def test_an_images_type_and_size_come_from_its_first_bytes(raw, expected):
    assert measure(raw) == expected


@pytest.mark.parametrize("model, size, detail, documented", [
    # OpenAI's "Calculating costs": 1024 × 1024 high is 4 tiles, 765 tokens; 2048 × 4096 is 6 tiles, 1,105.
    ("gpt-4o", (1024, 1024), "high", 765),
    ("gpt-4o", (2048, 4096), None, 1_105),
    ("gpt-4o", (4096, 8192), "low", 85),
    ("gpt-4.1", (768, 2048), "high", 85 + 170 * 8),      # the most tiles there can be
    ("gpt-4o-mini", (1024, 1024), "high", 2_833 + 4 * 5_667),
    ("gpt-4.1-mini", (1024, 1024), "high", 1_659),        # 1,024 patches × 1.62
    ("gpt-4.1-nano", (4000, 3000), "low", 3_779),         # 1,536 patches × 2.46
    ("some-local-model", None, None, 2_833 + 8 * 5_667),  # unknown model and size: the largest rule
])
def test_openai_image_tokens_are_the_documented_figures(model, size, detail, documented):
    width, height = size or (None, None)
    counted = openai_image_tokens(model, Image(width=width, height=height, detail=detail))
    assert counted.billed == documented + IMAGE_OVERHEAD_TOKENS


@pytest.mark.parametrize("size, documented", [
    ((200, 200), 64),            # about 54 by area; 8 × 8 patches of 28 px
    ((1000, 1000), 1_334),       # the docs' 1 megapixel example
    ((1092, 1092), 1_590),       # the largest square the docs list
    ((784, 1568), 1_640),        # the largest 1:2 size the docs list: about 1,639
    ((8000, 8000), 1_700),       # scaled down by Anthropic first: never more than the ceiling
    (None, 1_700),               # a URL: its size is unknown
])
def test_anthropic_image_tokens_cover_the_documented_figures(size, documented):
    width, height = size or (None, None)
    counted = anthropic_image_tokens(Image(width=width, height=height))
    assert counted.billed >= documented + IMAGE_OVERHEAD_TOKENS


# ----------------------------------------------------------------- each format to its own provider

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_openai_client_sends_gpt_an_image_as_data_and_as_a_url(server, account, stubs, stream):
    answered(stubs[0], 2_000)
    parts = [LOOK, {"type": "image_url", "image_url": {"url": data_url(PHOTO), "detail": "high"}},
             {"type": "image_url", "image_url": {"url": URL}}]
    text = openai_text(openai_client(server, account), stream, model=GPT, max_tokens=50,
                       messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}])
    assert text == "A cat."
    sent = stubs[0].requests[0]["body"]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]
    assert_charged_exactly(server, account["user_id"], cost(GPT, 2_000, 6))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_anthropic_client_sends_claude_an_image_as_data_and_as_a_url(server, account, stubs, stream):
    answered(stubs[1], 1_049 + 1_600 + 20)  # what Claude bills: the PNG by its area, the URL at most
    blocks = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PHOTO)}},
              {"type": "image", "source": {"type": "url", "url": URL}}, LOOK]
    text = anthropic_text(anthropic_client(server, account), stream, model=CLAUDE, max_tokens=50,
                          messages=[{"role": "user", "content": blocks}])
    assert text == "A cat."
    assert stubs[1].requests[0]["body"]["messages"] == [{"role": "user", "content": blocks}]
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 1_049 + 1_600 + 20, 6))


# ----------------------------------------------------------------- across formats

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_openai_clients_images_reach_claude_as_image_blocks(server, account, stubs, stream):
    answered(stubs[1], 1_500)
    jpg = jpeg(800, 600)
    parts = [LOOK, {"type": "image_url", "image_url": {"url": data_url(jpg, "image/jpeg"), "detail": "low"}},
             {"type": "image_url", "image_url": {"url": URL}}]
    text = openai_text(openai_client(server, account), stream, model=CLAUDE, max_tokens=50,
                       messages=[{"role": "user", "content": parts}])
    assert text == "A cat."
    assert stubs[1].requests[0]["body"]["messages"] == [{"role": "user", "content": [
        LOOK, {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": b64(jpg)}},
        {"type": "image", "source": {"type": "url", "url": URL}}]}]
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 1_500, 6))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_anthropic_clients_images_reach_gpt_as_image_url_parts(server, account, stubs, stream):
    answered(stubs[0], 1_200)
    small = gif(64, 64)
    blocks = [{"type": "text", "text": "Compare "}, {"type": "text", "text": "these."},
              {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": b64(small)}},
              {"type": "image", "source": {"type": "url", "url": URL}}]
    text = anthropic_text(anthropic_client(server, account), stream, model=GPT, max_tokens=50, system="Be brief.",
                          messages=[{"role": "user", "content": blocks}])
    assert text == "A cat."
    assert stubs[0].requests[0]["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Compare these."},
                                     {"type": "image_url", "image_url": {"url": data_url(small, "image/gif")}},
                                     {"type": "image_url", "image_url": {"url": URL}}]}]
    assert_charged_exactly(server, account["user_id"], cost(GPT, 1_200, 6))


def test_text_parts_alone_still_reach_a_provider_as_plain_text(server, account, stubs):
    anthropic_client(server, account).messages.create(model=GPT, max_tokens=20, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}])
    assert stubs[0].requests[0]["body"]["messages"] == [{"role": "user", "content": "Hi there"}]


# ----------------------------------------------------------------- the hold covers what the provider bills

def test_gpt_4o_minis_image_is_billed_at_its_usage_never_above_its_hold(server, account, stubs):
    """gpt-4o-mini bills an image as 2,833 + 5,667 tokens per tile: a
    1024 × 768 high-detail image is 25,501 tokens, far above its bytes."""
    image_tokens = 2_833 + 4 * 5_667
    answered(stubs[0], image_tokens + 20, 40)
    completion = openai_client(server, account).chat.completions.create(model=GPT, max_tokens=100, messages=[
        {"role": "user", "content": [LOOK, {"type": "image_url", "image_url": {"url": data_url(PHOTO),
                                                                               "detail": "high"}}]}])
    assert Decimal(completion.usage.model_extra["cost"]) == cost(GPT, image_tokens + 20, 40)
    assert_charged_exactly(server, account["user_id"], cost(GPT, image_tokens + 20, 40))
    assert the_hold(server, account["user_id"]) >= cost(GPT, image_tokens + 20, 100)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_claudes_url_images_are_held_at_the_ceiling_and_billed_at_usage(server, account, stubs, stream):
    """Three URL images, whose size the service never learns (it fetches
    nothing): each held at the most Claude bills for one."""
    answered(stubs[1], 3 * 1_600 + 30, 12)
    blocks = [LOOK, *[{"type": "image", "source": {"type": "url", "url": f"{URL}?n={n}"}} for n in range(3)]]
    anthropic_text(anthropic_client(server, account), stream, model=CLAUDE, max_tokens=64,
                   messages=[{"role": "user", "content": blocks}])
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 3 * 1_600 + 30, 12))
    assert the_hold(server, account["user_id"]) >= cost(CLAUDE, 3 * 1_600 + 30, 64)
