import { get, post, query, remove } from "../api.js";
import { formatMoney } from "../money.js";
import { accessByModel, accessWords } from "../catalog.js";
import { confirmButton, describeError, empty, field, formAlert, formatDate, h, link, needsKeyAdvice, pagedList, replace, section, sendingForm, table } from "../ui.js";

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

// The picker, models you can call now first: each option says so, or that it needs a key.
function modelPicker(models, access, chosen) {
  const option = (model) => h("option", { value: model.id, "data-access": access.get(model.id)?.via },
    `${model.id} · ${accessWords(access.get(model.id))} · ${formatMoney(model.input_price_per_mtok)} in / ` +
    `${formatMoney(model.output_price_per_mtok)} out per million tokens`);
  const ready = models.filter((model) => access.get(model.id)?.callable);
  const locked = models.filter((model) => !access.get(model.id)?.callable);
  const picker = h("select", {}, h("optgroup", { label: "Ready to use" }, ready.map(option)),
                   locked.length ? h("optgroup", { label: "Need a key first" }, locked.map(option)) : null);
  picker.value = chosen;
  if (!picker.value && ready.length) picker.value = ready[0].id;
  return picker;
}

export async function render({ search, signal, navigate }) {
  const [{ models }, preferences, access] = await Promise.all([get("/api/v1/models?sort=popularity", signal),
                                                               get("/api/v1/preferences", signal), accessByModel(signal)]);
  const alert = formAlert();
  const chosen = search.get("model") || preferences.default_model_id || "local/echo";
  const picker = modelPicker(models, access, chosen);
  const fields = {
    model_id: field("Model", { name: "model_id", control: picker }),
    title: field("Title (optional)", { name: "title", autocomplete: "off", maxlength: 200 }),
  };
  // Said before anything is sent: the chosen model needs a key first.
  const advice = h("p", { class: "notice notice-info", "data-needs-key": "" });
  const showAdvice = () => {
    const chosenAccess = access.get(picker.value);
    replace(advice, chosenAccess && !chosenAccess.callable ? needsKeyAdvice(chosenAccess.providers[0]) : "");
    advice.hidden = !advice.textContent;
  };
  picker.addEventListener("change", showAdvice);
  showAdvice();
  const form = sendingForm("Start chat", { alert, fields, children: [...Object.values(fields), advice], send: async () => {
    const session = await post("/api/v1/chat/sessions", { model_id: fields.model_id.input.value,
                                                          title: fields.title.input.value.trim() });
    await navigate(`/console/chat/${session.id}`);
  } });

  return [h("h1", {}, "Chat"), alert, section("Start a chat", form), section("Your chats", sessionsList(signal, alert))];
}
