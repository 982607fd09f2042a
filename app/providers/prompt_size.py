"""How many tokens a prompt may be, before any provider counts it: an upper
bound, which the hold is made from, and an estimate, for a count where no
provider gives one."""
import json

# The upper bound is made offline: a byte-level tokenizer
# never makes more tokens than the text has UTF-8 bytes, plus what each message
# and the request add around the text.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 16
# Offering tools makes the provider add instructions of its own to the prompt,
# billed as input: Anthropic documents 313–346 tokens for them; OpenAI does not
# say. This bounds them, and each tool's wrapping around its own schema.
TOOL_USE_OVERHEAD_TOKENS = 1024
TOOL_OVERHEAD_TOKENS = 32


def message_tokens_upper_bound(content):
    return len(content.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS


def prompt_tokens_upper_bound(messages, tool_use=None):
    """The most tokens the prompt can be: the UTF-8 bytes of everything sent
    (texts, tool calls with their ids and arguments, tools' results, tool
    definitions) and the overheads around them."""
    bound = REQUEST_OVERHEAD_TOKENS + sum(message_tokens_upper_bound(_sent_text(m)) for m in messages)
    if tool_use is not None:
        bound += TOOL_USE_OVERHEAD_TOKENS + sum(TOOL_OVERHEAD_TOKENS + _utf8_bytes(tool.name, tool.description or "",
                                                                                    json.dumps(tool.parameters))
                                                for tool in tool_use.tools)
    return bound


# A prompt's tokens where no provider counts them: OpenAI's rule of thumb of
# four bytes of English a token, and its cookbook's three tokens around each
# message and three more priming the reply. An estimate, not a bound: the hold
# never uses it.
ESTIMATE_BYTES_PER_TOKEN = 4
ESTIMATE_MESSAGE_TOKENS = 3


def estimated_prompt_tokens(messages, tool_use=None):
    sent = sum(_utf8_bytes(_sent_text(message)) for message in messages)
    if tool_use is not None:
        sent += sum(_utf8_bytes(tool.name, tool.description or "", json.dumps(tool.parameters))
                    for tool in tool_use.tools)
    return -(-sent // ESTIMATE_BYTES_PER_TOKEN) + ESTIMATE_MESSAGE_TOKENS * (len(messages) + 1)


def _sent_text(message):
    calls = message.get("tool_calls") or ()
    return "".join([message["content"], message.get("tool_call_id") or ""]
                   + [call.id + call.name + call.arguments for call in calls])


def _utf8_bytes(*texts):
    return sum(len(text.encode("utf-8")) for text in texts)
