import { get, stream } from "../api.js";
import { balanceSummary } from "../balance.js";
import { modelPath } from "../catalog.js";
import { keyboardLikely } from "../keyboard.js";
import { moneyText, sumMoney } from "../money.js";
import { empty, field, formAlert, h, link, replace, section, sendingForm } from "../ui.js";

// A bubble's own figures only: a prompt's tokens and cost, or an answer's.
function meta(message) {
  const tokens = message.role === "user" ? `${message.prompt_tokens} prompt tokens` : `${message.completion_tokens} answer tokens`;
  return [`${tokens} · `, moneyText(message.cost, { "data-cost": message.cost })];
}

// The conversation's total, as the API's session gives it: kept up to date as exchanges complete.
function totals(session) {
  const holder = h("p", { class: "aside conversation-total" });
  holder.show = ({ message_count: count, total_cost: cost }) => {
    holder.dataset.messages = count;
    holder.dataset.cost = cost;
    replace(holder, "Model: ", link(modelPath(session.model_id), session.model_id),
            ` · ${count} message${count === 1 ? "" : "s"} · `, moneyText(cost), " in all");
  };
  holder.show(session);
  return holder;
}

function bubble(role, content, metaText = "") {
  const text = h("div", { class: "content" }, content);
  const details = h("div", { class: "meta" }, metaText);
  const item = h("li", { class: `message message-${role}`, "data-role": role },
                 h("div", { class: "role" }, role === "user" ? "You" : "Model"), text, details);
  item.text = text;
  item.details = details;
  item.showMeta = (message) => {
    replace(details, meta(message));
    item.dataset.cost = message.cost;
    item.dataset.tokens = message.role === "user" ? message.prompt_tokens : message.completion_tokens;
  };
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
                 messages.map((message) => {
                   const item = bubble(message.role, message.content);
                   item.showMeta(message);
                   return item;
                 }));
  const header = totals(session);
  const conversation = { message_count: session.message_count, total_cost: session.total_cost };
  const noMessages = messages.length ? null : empty("No messages yet: write the first one below.");
  const balanceHolder = h("div", {}, balanceSummary(balance));
  const alert = formAlert();
  const content = field("Message", { name: "content", control: h("textarea", { required: true, maxlength: 100000 }),
                                     hint: keyboardLikely() ? "Ctrl+Enter sends." : null });
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
      asked.showMeta(exchange.user_message);
      answer.showMeta(exchange.assistant_message);
      conversation.message_count += 2;
      conversation.total_cost = sumMoney([conversation.total_cost, exchange.user_message.cost,
                                          exchange.assistant_message.cost]);
      header.show(conversation);
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
    header,
    noMessages,
    list,
    form,
    section("Balance", balanceHolder),
  ];
}
