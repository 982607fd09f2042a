import { get, post, query, remove } from "../api.js";
import { formatMoney } from "../money.js";
import { checkboxes, confirmButton, describeError, empty, field, formAlert, formatDate, h, pagedList, replace, section, select, sendingForm, table } from "../ui.js";

const PERIODS = [["", "No limit"], ["day", "per day"], ["month", "per month"], ["total", "in total"]];

function limitText(key) {
  if (key.spend_limit === null) return "none";
  return `${formatMoney(key.spend_limit)} ${PERIODS.find(([value]) => value === key.spend_limit_period)?.[1] || ""}`;
}

// The secret, shown once, with a button that copies it.
function revealed(created) {
  const status = h("span", { role: "status" });
  const copy = h("button", { type: "button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(created.key);
      status.textContent = "Copied.";
    } catch {
      status.textContent = "Copy failed: select the key and copy it by hand.";
    }
  } }, "Copy");
  return h("div", { class: "notice notice-ok", "data-secret": "" },
    h("p", {}, `Key "${created.name}" created. Copy it now: it is never shown again.`),
    h("div", { class: "secret" }, h("code", { class: "secret-value" }, created.key), copy, status));
}

export async function render({ signal }) {
  const { models } = await get("/api/v1/models?sort=id", signal);
  const secretHolder = h("div", {});
  const alert = formAlert();

  const list = pagedList("your access keys", (cursor) => get(`/api/v1/access-keys${query({ cursor, limit: 20 })}`, signal),
    ({ access_keys: keys }) => (keys.length
      ? table(["Name", "Key", "Models", "Limit", ["Spent", "number"], "Last used", "Expires", ""],
          keys.map((key) => h("tr", { "data-access-key": key.id },
            h("td", {}, key.name), h("td", { class: "secret-mask" }, `••••${key.last4}`),
            h("td", {}, key.allowed_models ? key.allowed_models.join(", ") : "all"), h("td", {}, limitText(key)),
            h("td", { class: "number" }, formatMoney(key.spent)), h("td", {}, formatDate(key.last_used_at)),
            h("td", {}, key.expires_at ? formatDate(key.expires_at) : "never"),
            h("td", {}, confirmButton("Revoke", `Revoke "${key.name}"? Programs using it stop working.`, async () => {
              try {
                await remove(`/api/v1/access-keys/${key.id}`);
                alert.show(`Revoked "${key.name}".`, "ok");
              } catch (error) {
                alert.show(describeError(error));
              }
              await list.refresh();
            })))))
      : empty("No access keys yet. Create one for programs that call the API.")));

  const fields = {
    name: field("Name", { name: "name", autocomplete: "off", required: true }),
    allowed_models: checkboxes("Allowed models (none checked: all)", "allowed_models", models.map((model) => [model.id, model.id])),
    spend_limit: field("Spend limit in USD (optional)", { name: "spend_limit", inputmode: "decimal", autocomplete: "off" }),
    spend_limit_period: field("Limit period", { name: "spend_limit_period", control: select(PERIODS, "") }),
    expires_at: field("Expires (optional)", { name: "expires_at", type: "datetime-local" }),
  };
  const form = sendingForm("Create key", { alert, fields, children: Object.values(fields), send: async (sent) => {
    replace(secretHolder);
    const allowed = fields.allowed_models.values();
    const expires = fields.expires_at.input.value;
    const created = await post("/api/v1/access-keys", {
      name: fields.name.input.value.trim(),
      allowed_models: allowed.length ? allowed : null,
      spend_limit: fields.spend_limit.input.value.trim() || null,
      spend_limit_period: fields.spend_limit_period.input.value || null,
      expires_at: expires ? new Date(expires).toISOString() : null,
    });
    sent.reset();
    replace(secretHolder, revealed(created));
    await list.reload();
  } });

  return [h("h1", {}, "Access keys"),
          h("p", { class: "aside" }, "Access keys let programs call the models as you, within the limits you set."),
          alert, secretHolder, section("Your access keys", list), section("Create an access key", form)];
}
