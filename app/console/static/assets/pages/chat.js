import { get, post, query, remove } from "../api.js";
import { formatMoney } from "../money.js";
import { confirmButton, describeError, empty, field, formAlert, formatDate, h, link, pagedList, section, select, sendingForm, table } from "../ui.js";

function sessionsList(signal, alert) {
  const list = pagedList("your chats", (cursor) => get(`/api/v1/chat/sessions${query({ cursor, limit: 20 })}`, signal),
    (page) => (page.sessions.length
      ? table(["Chat", "Model", ["Messages", "number"], ["Cost", "number"], "Started", ""], page.sessions.map((session) =>
          h("tr", { "data-session": session.id },
            h("td", {}, link(`/console/chat/${session.id}`, session.title || "Untitled chat")),
            h("td", {}, session.model_id), h("td", { class: "number" }, session.message_count),
            h("td", { class: "number" }, formatMoney(session.total_cost)), h("td", {}, formatDate(session.created_at)),
            h("td", {}, confirmButton("Delete", "Delete this chat and its messages?", async () => {
              try {
                await remove(`/api/v1/chat/sessions/${session.id}`);
                alert.show("Chat deleted.", "ok");
              } catch (error) {
                alert.show(describeError(error));
              }
              await list.refresh();
            })))), "Newest first")
      : empty("No chats yet. Start one above.")));
  return list;
}

export async function render({ search, signal, navigate }) {
  const [{ models }, preferences] = await Promise.all([get("/api/v1/models?sort=popularity", signal),
                                                      get("/api/v1/preferences", signal)]);
  const alert = formAlert();
  const chosen = search.get("model") || preferences.default_model_id || "local/echo";
  const fields = {
    model_id: field("Model", { name: "model_id", control: select(models.map((m) => [m.id, `${m.id} · ${formatMoney(m.input_price_per_mtok)}/${formatMoney(m.output_price_per_mtok)} per M`]), chosen) }),
    title: field("Title (optional)", { name: "title", autocomplete: "off", maxlength: 200 }),
  };
  const form = sendingForm("Start chat", { alert, fields, children: Object.values(fields), send: async () => {
    const session = await post("/api/v1/chat/sessions", { model_id: fields.model_id.input.value,
                                                          title: fields.title.input.value.trim() });
    await navigate(`/console/chat/${session.id}`);
  } });

  return [h("h1", {}, "Chat"), alert, section("Start a chat", form), section("Your chats", sessionsList(signal, alert))];
}
