import { get, stream } from "../api.js";
import { balanceSummary } from "../balance.js";
import { modelPath } from "../catalog.js";
import { formatMoney } from "../money.js";
import { empty, field, formAlert, h, link, replace, section, sendingForm } from "../ui.js";

function meta(message) {
  const tokens = message.role === "user" ? `${message.prompt_tokens} prompt tokens` : `${message.completion_tokens} answer tokens`;
  return `${tokens} · ${formatMoney(message.cost)}`;
}

function bubble(role, content, metaText = "") {
  const text = h("div", { class: "content" }, content);
  const details = h("div", { class: "meta" }, metaText);
  const item = h("li", { class: `message message-${role}`, "data-role": role },
                 h("div", { class: "role" }, role === "user" ? "You" : "Model"), text, details);
  item.text = text;
  item.details = details;
  return item;
}

async function allMessages(sessionId, signal) {
  const messages = [];
  let cursor = null;
  let session;
  do {
    session = await get(`/api/v1/chat/sessions/${sessionId}?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, signal);
    messages.push(...session.messages);
    cursor = session.next_cursor;
  } while (cursor);
  return { session, messages };
}

export async function render({ params, signal }) {
  const [{ session, messages }, balance] = await Promise.all([allMessages(params.session, signal), get("/api/v1/balance", signal)]);
  const list = h("ol", { class: "messages", "aria-live": "polite" },
                 messages.map((message) => bubble(message.role, message.content, meta(message))));
  const noMessages = messages.length ? null : empty("No messages yet: write the first one below.");
  const balanceHolder = h("div", {}, balanceSummary(balance));
  const alert = formAlert();
  const content = field("Message", { name: "content", control: h("textarea", { required: true, maxlength: 100000 }),
                                     hint: "Ctrl+Enter sends." });
  const form = sendingForm("Send", { alert, children: [alert, content], send: async () => {
    const text = content.input.value.trim();
    if (!text) return alert.show("Write a message first.");
    noMessages?.remove();
    const asked = bubble("user", text, "sending…");
    const answer = bubble("assistant", "", "writing…");
    list.append(asked, answer);
    try {
      const exchange = await stream(`/api/v1/chat/sessions/${session.id}/messages`, { content: text }, {
        signal, onDelta: (piece) => answer.text.append(piece),
      });
      replace(answer.text, exchange.assistant_message.content);
      asked.details.textContent = meta(exchange.user_message);
      answer.details.textContent = `${exchange.usage.prompt_tokens + exchange.usage.completion_tokens} tokens · cost ${formatMoney(exchange.cost)}`;
      answer.dataset.cost = exchange.cost;
      replace(balanceHolder, balanceSummary(exchange.balance));
      content.input.value = "";
    } catch (error) {  // take back the bubbles of an exchange that did not happen
      if (!answer.text.textContent) answer.remove();
      asked.details.textContent = "not answered";
      get("/api/v1/balance", signal).then((fresh) => replace(balanceHolder, balanceSummary(fresh)), () => {});
      throw error;
    }
  } });
  content.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  return [
    h("p", {}, link("/console/chat", "← All chats")),
    h("h1", {}, session.title || "Untitled chat"),
    h("p", { class: "aside" }, "Model: ", link(modelPath(session.model_id), session.model_id),
      ` · ${session.message_count} messages so far · ${formatMoney(session.total_cost)} spent`),
    noMessages,
    list,
    form,
    section("Balance", balanceHolder),
  ];
}
