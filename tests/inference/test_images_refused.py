"""What the inference API refuses about images: each gets 400 in the format's
own error shape naming the field, no provider is called, and nothing is held.
And the body limits: 1 MiB for the account API, MAX_INFERENCE_BODY (20 MiB)
under /v1, each tested on both sides, a body over it a 413 in the path's shape."""
import json

import pytest

from tests.inference.refusals import (assert_nothing_happened, assert_refused_in_anthropics_shape,  # noqa: F401
                                      assert_refused_in_openais_shape, settings, token)
from tests.inference.test_images import b64, data_url, gif, png
from tests.support import bearer

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-20241022"
PICTURE = png(8, 8)
MiB = 1024 * 1024



def image_url(url, role="user"):
    return {"role": role, "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": url}}]}


def image_block(source, role="user"):
    return {"role": role, "content": [{"type": "image", "source": source}, {"type": "text", "text": "Look"}]}


def base64_source(data, media_type="image/png"):
    return {"type": "base64", "media_type": media_type, "data": data}


OPENAI_REFUSALS = {
    "an image to a model that takes text only": (
        {"model": "openai/o3-mini", "messages": [image_url(data_url(PICTURE))]}, "messages"),
    "an image to a local model": ({"model": "local/echo", "messages": [image_url("https://a.example/x.png")]},
                                  "messages"),
    "an http URL": ({"messages": [image_url("http://a.example/x.png")]}, "messages.0.content.1.image_url.url"),
    "a file URL": ({"messages": [image_url("file:///etc/passwd")]}, "messages.0.content.1.image_url.url"),
    "a URL of no scheme": ({"messages": [image_url("a.example/x.png")]}, "messages.0.content.1.image_url.url"),
    "a data URL that is not base64": (
        {"messages": [image_url("data:image/png,%89PNG")]}, "messages.0.content.1.image_url.url"),
    "base64 that does not decode": (
        {"messages": [image_url("data:image/png;base64,iVBOR$$$")]}, "messages.0.content.1.image_url.url"),
    "an unsupported media type": (
        {"messages": [image_url(data_url(PICTURE, "image/tiff"))]}, "messages.0.content.1.image_url.url"),
    "bytes of another type than said": (
        {"messages": [image_url(data_url(gif(4, 4), "image/png"))]}, "messages.0.content.1.image_url.url"),
    "bytes of no image": (
        {"messages": [image_url(data_url(b"%PDF-1.7 not an image"))]}, "messages.0.content.1.image_url.url"),
    "an image in a system message": (
        {"messages": [image_url(data_url(PICTURE), role="system"), {"role": "user", "content": "Hi"}]},
        "messages.0.content.1"),
    "a detail neither low, high nor auto": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": data_url(PICTURE), "detail": "ultra"}}]}]}, "messages.0.content.0.image_url.detail"),
}

ANTHROPIC_REFUSALS = {
    "an image to a local model": (
        {"model": "local/echo", "messages": [image_block(base64_source(b64(PICTURE)))]}, "messages"),
    "an http URL": (
        {"messages": [image_block({"type": "url", "url": "http://a.example/x.png"})]},
        "messages.0.content.0.source.url"),
    "base64 that does not decode": (
        {"messages": [image_block(base64_source("not base64!"))]}, "messages.0.content.0.source.data"),
    "an unsupported media type": (
        {"messages": [image_block(base64_source(b64(PICTURE), "image/bmp"))]},
        "messages.0.content.0.source.media_type"),
    "bytes of another type than said": (
        {"messages": [image_block(base64_source(b64(PICTURE), "image/jpeg"))]}, "messages.0.content.0.source.data"),
    "an image in the assistant's turn": (
        {"messages": [{"role": "user", "content": "Hi"}, image_block(base64_source(b64(PICTURE)), "assistant")]},
        "messages.1.content.0"),
    "an image in a tool's result": (
        {"tools": [{"name": "camera", "input_schema": {"type": "object"}}], "messages": [
            {"role": "user", "content": "Snap"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "camera", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "image", "source": base64_source(b64(PICTURE))}]}]}]},
        "messages.2.content.0.content.0"),
}


@pytest.mark.parametrize("change, field", OPENAI_REFUSALS.values(), ids=OPENAI_REFUSALS.keys())
def test_openai_format_image_refusals_name_the_field(client, token, database, stubs, change, field):
    response = client.post("/v1/chat/completions", headers=bearer(token), json={"model": GPT, **change})
    assert_refused_in_openais_shape(response, field)
    assert_nothing_happened(database, stubs)


@pytest.mark.parametrize("model", [CLAUDE, GPT])
@pytest.mark.parametrize("change, field", ANTHROPIC_REFUSALS.values(), ids=ANTHROPIC_REFUSALS.keys())
def test_anthropic_format_image_refusals_name_the_field(client, token, database, stubs, change, field, model):
    response = client.post("/v1/messages", headers={"x-api-key": token},
                           json={"model": model, "max_tokens": 64, **change})
    assert_refused_in_anthropics_shape(response, field)
    assert_nothing_happened(database, stubs)


# ----------------------------------------------------------------- body limits

def padded(body, size):
    """`body` as JSON of exactly `size` bytes (trailing whitespace is valid JSON)."""
    text = json.dumps(body).encode()
    return text + b" " * (size - len(text))


def test_an_account_body_of_1_mib_is_read_and_one_byte_more_is_413(client, token):
    headers = {**bearer(token), "Content-Type": "application/json"}
    at_limit = client.post("/api/v1/balance/funds", headers=headers, data=padded({"amount": "1"}, MiB))
    assert at_limit.status_code == 201, at_limit.get_json()
    over = client.post("/api/v1/balance/funds", headers=headers, data=padded({"amount": "1"}, MiB + 1))
    assert over.status_code == 413
    assert over.get_json()["error"]["code"] == "payload_too_large"


def test_an_inference_body_may_pass_1_mib_up_to_max_inference_body(app, client, token, stubs):
    limit = app.config["MAX_INFERENCE_BODY"]
    assert limit == 20 * MiB
    headers = {**bearer(token), "Content-Type": "application/json"}
    call = {"model": GPT, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    at_limit = client.post("/v1/chat/completions", headers=headers, data=padded(call, limit))
    assert at_limit.status_code == 200, at_limit.get_json()
    over = client.post("/v1/chat/completions", headers=headers, data=padded(call, limit + 1))
    assert over.status_code == 413
    assert over.get_json()["error"]["type"] == "invalid_request_error"
    assert over.get_json()["error"]["code"] == "payload_too_large"
    over = client.post("/v1/messages", headers={"x-api-key": token, "Content-Type": "application/json"},
                       data=padded({**call, "model": CLAUDE}, limit + 1))
    assert over.status_code == 413
    assert over.get_json()["type"] == "error" and over.get_json()["error"]["type"] == "request_too_large"
    assert len(stubs[0].requests) == 1 and stubs[1].requests == []


def test_a_large_image_passes_the_account_apis_limit_under_v1(client, token, stubs):
    """A 3 MiB PNG as base64 (4 MiB of JSON): more than any account body may be."""
    big = png(8, 8) + b"\x00" * (3 * MiB)
    response = client.post("/v1/messages", headers={"x-api-key": token}, json={
        "model": CLAUDE, "max_tokens": 16, "messages": [image_block(base64_source(b64(big)))]})
    assert response.status_code == 200, response.get_json()
    sent = stubs[1].requests[0]["body"]["messages"][0]["content"][0]
    assert sent == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(big)}}
