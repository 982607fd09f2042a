"""OpenAI's Responses API: its request as a ModelCall, its answer (a
response object with its output items) and its stream (response.created,
each output item added, its deltas, done, then response.completed, each event
numbered); errors in OpenAI's shape. Stateless: every call carries its whole
conversation in `input`."""
import json
import time

from app.api.formats import (ToolCallsSeen, ending_of, image_url_part, openai, replay_events,
                             response_format_of, sse, text_of, tool_of, tool_use_of)
from app.errors import ValidationFailed
from app.money import format_money
from app.providers.conversation import ModelCall, text_part, user_content
from app.providers.reasoning import Reasoning
from app.providers.tools import ToolCall, arguments_text
from app.schemas.responses_format import (ChosenFunction, IncompleteDetails, InputTokensDetails, OutputFunctionCall,
                                          OutputMessage, OutputText, OutputTokensDetails, Response, ResponsesRequest,
                                          ResponsesUsage, ToolSpec)

NAME = "responses"
ENDPOINT = "create_response"
PATH = "/responses"
SUMMARY = "Create a response (OpenAI's Responses API), billed per token; `stream` for server-sent events"
Request, Answer, ERROR_BODY = ResponsesRequest, Response, openai.ERROR_BODY
# The request's fields in this format's words, for validation errors.
FIELDS = {"max_tokens": "max_output_tokens", "prompt": "input", "tools": "tools", "response_format": "text.format"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
STATELESS = "nothing is kept between calls here: send the whole conversation in input"
error = openai.error


def call_of(body):
    for field in ("store", "previous_response_id", "conversation"):
        if getattr(body, field) not in (None, False):
            raise ValidationFailed(details={field: STATELESS})
    system = [] if body.instructions is None else [{"role": "system", "content": body.instructions}]
    tools = [tool_of(tool.name, tool.description, tool.parameters) for tool in body.tools or ()]
    named = hasattr(body.tool_choice, "name")
    tool_use = tool_use_of(tools, body.tool_choice.name if named else body.tool_choice, body.parallel_tool_calls,
                           {"tools": "tools.{}.name", "choice": "tool_choice.name" if named else "tool_choice"})
    effort = body.reasoning and body.reasoning.effort
    return ModelCall(body.model, system + _messages(body.input), body.max_output_tokens, body.temperature, None,
                     body.stream, tool_use, _response_format(body.text),
                     None if effort is None else Reasoning(effort=effort),
                     reasoning_field=None if effort is None else "reasoning.effort", fallbacks=tuple(body.models or ()),
                     sort=body.provider and body.provider.sort)


def _messages(items):
    """The input's items as messages in no format's words: function calls
    join the assistant's message before them (or make one), each output is a
    tool's message answering a call made before it."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages, seen = [], ToolCallsSeen()
    for index, item in enumerate(items):
        field = f"input.{index}"
        if item.type == "function_call":
            call = seen.made(item.call_id, item.name, item.arguments, f"{field}.arguments")
            if messages and messages[-1]["role"] == "assistant":
                messages[-1]["tool_calls"] = [*messages[-1].get("tool_calls", ()), call]
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif item.type == "function_call_output":
            seen.check(item.call_id, f"{field}.call_id")
            _no_images(item.output, f"{field}.output", "an image in a function's output is not supported; "
                                                        "send it in a user's message after it")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text_of(item.output),
                             "is_error": False})
        elif item.role == "user" and not isinstance(item.content, str):
            messages.append({"role": "user", "content": user_content(
                [_part(part, f"{field}.content.{place}") for place, part in enumerate(item.content)])})
        else:
            _no_images(item.content, f"{field}.content", "an image goes in a user's message only")
            messages.append({"role": ROLES[item.role], "content": text_of(item.content)})
    return messages


def _part(part, field):
    if part.type != "input_image":
        return text_part(part.text)
    return image_url_part(part.image_url, part.detail, f"{field}.image_url", f"{field}.detail")


def _no_images(content, field, why):
    for index, part in enumerate(content if isinstance(content, list) else ()):
        if part.type == "input_image":
            raise ValidationFailed(details={f"{field}.{index}": why})


def _response_format(text):
    asked = text.format if text is not None else None
    if asked is None or asked.type != "json_schema":
        return response_format_of(asked.type if asked else "text")
    return response_format_of("json_schema", asked.name, asked.schema_, asked.strict, asked.description)


def asks_for_stream(body):
    return body.stream


def renderer(hold, body):
    choice = body.tool_choice
    head = {
        "id": f"resp_{hold.id}", "created_at": int(time.time()), "model": hold.model_id,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "tool_choice": ChosenFunction(name=choice.name) if hasattr(choice, "name") else choice or "auto",
        # The schemas as JSON again (a request's numbers are read as Decimal).
        "tools": [ToolSpec(name=tool.name, description=tool.description, strict=tool.strict,
                           parameters=None if tool.parameters is None else json.loads(arguments_text(tool.parameters)))
                  for tool in body.tools or ()]}
    return Events(head)


def replay(stored_text, body):
    answer = Response.model_validate_json(stored_text)
    events = Events(answer.model_dump(exclude={"object", "status", "error", "incomplete_details", "store", "output",
                                               "usage"}))
    text = "".join(part.text for item in answer.output if item.type == "message" for part in item.content)
    calls = [ToolCall(item.call_id, item.name, item.arguments)
             for item in answer.output if item.type == "function_call"]
    return replay_events(events, answer, text, calls)


class Events:
    """A response as OpenAI streams it: response.created and
    response.in_progress; each output item (a message with one output_text
    part, or a function call) added, its text or arguments in deltas, then
    done; and response.completed (response.incomplete when cut at
    max_output_tokens) with the whole response and its usage, or
    response.failed. Every event carries its sequence_number. Item ids are
    made from the response's, so the stream's and the answer's agree."""
    status = 200

    def __init__(self, head):
        self.head = {**head, "tool_choice": _json(head["tool_choice"]),
                     "tools": [_json(tool) for tool in head["tools"]]}
        self.base = head["id"].removeprefix("resp_")
        self.sequence = 0
        self.items = []  # the output items streamed: {"item": …, "text" or "arguments": …, "done": bool}
        self.calls = {}  # a tool call's index in the reply → its item

    def _event(self, kind, **fields):
        text = sse({"type": kind, **fields, "sequence_number": self.sequence}, kind)
        self.sequence += 1
        return text

    def _snapshot(self, status, **fields):
        return {**self.head, "object": "response", "status": status, "error": None, "incomplete_details": None,
                "store": False, "output": [], "usage": None, **fields}

    def opening(self):
        return (self._event("response.created", response=self._snapshot("in_progress"))
                + self._event("response.in_progress", response=self._snapshot("in_progress")))

    def delta(self, text):
        if not text:
            return ""
        opened = ""
        if not self.items or self.items[-1]["done"] or self.items[-1]["item"]["type"] != "message":
            opened = self._open_message()
        item = self.items[-1]
        item["text"] += text
        return opened + self._event("response.output_text.delta", **self._place(item), content_index=0, delta=text,
                                    logprobs=[])

    def _open_message(self):
        opened = self._open({"type": "message", "id": _message_id(self.base, len(self.items)),
                             "status": "in_progress", "role": "assistant", "content": []}, text="")
        return opened + self._event("response.content_part.added", **self._place(self.items[-1]), content_index=0,
                                    part=_text_part(""))

    def tool_delta(self, delta):
        opened = ""
        if delta.id is not None:
            opened = self._open({"type": "function_call", "id": f"fc_{self.base}_{delta.index}", "call_id": delta.id,
                                 "name": delta.name, "arguments": "", "status": "in_progress"}, arguments="")
            self.calls[delta.index] = self.items[-1]
        item = self.calls.get(delta.index)
        if item is None or not delta.arguments:
            return opened
        item["arguments"] += delta.arguments
        return opened + self._event("response.function_call_arguments.delta", **self._place(item),
                                    delta=delta.arguments)

    def closing(self, answer):
        # A reply with no output at all still has its (empty) message, as the answer does.
        opened = "" if self.items else self._open_message()
        final = answer.model_dump(mode="json")
        return (opened + self._close(answer.status)
                + self._event("response.completed" if answer.status == "completed" else "response.incomplete",
                              response=final))

    def failure(self, failed):
        closed = self._close()
        message = openai.error(failed.code, failed.message, failed.status, failed.details)["error"]["message"]
        return closed + self._event("response.failed", response=self._snapshot(
            "failed", error={"code": failed.code, "message": message}))

    def _open(self, item, **accumulated):
        text = self._close()
        self.items.append({"item": item, "done": False, "index": len(self.items), **accumulated})
        return text + self._event("response.output_item.added", output_index=len(self.items) - 1, item=item)

    def _close(self, status="completed"):
        """The done events of the item still open, if any (`status`: how the answer ended)."""
        if not self.items or self.items[-1]["done"]:
            return ""
        current = self.items[-1]
        current["done"] = True
        place = self._place(current)
        if current["item"]["type"] == "message":
            part = _text_part(current["text"])
            item = {**current["item"], "status": status, "content": [part]}
            text = (self._event("response.output_text.done", **place, content_index=0, text=current["text"],
                                logprobs=[])
                    + self._event("response.content_part.done", **place, content_index=0, part=part))
        else:
            item = {**current["item"], "status": "completed", "arguments": current["arguments"]}
            text = self._event("response.function_call_arguments.done", **place, name=item["name"],
                               arguments=current["arguments"])
        return text + self._event("response.output_item.done", output_index=place["output_index"], item=item)

    @staticmethod
    def _place(item):
        return {"item_id": item["item"]["id"], "output_index": item["index"]}

    def answer(self, hold, reply, exchange):
        cut = ending_of(hold, reply).reason == "length"
        status = "incomplete" if cut else "completed"
        output = []
        if reply.content or not reply.tool_calls:
            output.append(OutputMessage(id=_message_id(self.base, 0), status=status,
                                        content=[OutputText(text=reply.content)]))
        output += [OutputFunctionCall(id=f"fc_{self.base}_{index}", call_id=call.id, name=call.name,
                                      arguments=call.arguments)
                   for index, call in enumerate(reply.tool_calls)]
        return Response(
            **self.head, status=status, output=output,
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if cut else None,
            usage=usage_of(exchange.charge))

    def thinking_delta(self, delta):
        """Thinking is not shown in this format: nothing is kept to send it back with."""
        return ""


def usage_of(charge):
    """A Charge (app/pricing.py) as this format's usage: input_tokens count the cached ones too."""
    return ResponsesUsage(
        input_tokens=charge.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=charge.cache_read_tokens,
                                                cache_write_tokens=charge.cache_write_tokens
                                                + charge.cache_write_1h_tokens),
        output_tokens=charge.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=charge.reasoning_tokens or 0),
        total_tokens=charge.prompt_tokens + charge.completion_tokens, cost=format_money(charge.cost))


def _message_id(base, index):
    """The id of the answer's message: its first output item's, or a later one's."""
    return f"msg_{base}" if index == 0 else f"msg_{base}_{index}"


def _text_part(text):
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _json(value):
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value
