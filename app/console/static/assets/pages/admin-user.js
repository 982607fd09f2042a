import { get, post } from "../api.js";
import { ADMIN, actionForm } from "../admin.js";
import { balanceSummary } from "../balance.js";
import { formatMoney } from "../money.js";
import { empty, field, formatDate, h, replace, section, table } from "../ui.js";

function ledger(rows) {
  return rows.length
    ? table(["When", "Type", "Description", ["Amount", "number"], ["Available after", "number"]],
            rows.map((row) => h("tr", { "data-transaction": row.id }, h("td", {}, formatDate(row.created_at)),
              h("td", {}, row.type), h("td", {}, row.description), h("td", { class: "number" }, formatMoney(row.amount)),
              h("td", { class: "number" }, formatMoney(row.available_after)))))
    : empty("No transactions.");
}

function calls(rows) {
  return rows.length
    ? table(["When", "Model", ["Held", "number"], ["Charged", "number"]],
            rows.map((call) => h("tr", { "data-call": call.hold_id }, h("td", {}, formatDate(call.created_at)),
              h("td", {}, call.model_id || ""), h("td", { class: "number" }, formatMoney(call.held)),
              h("td", { class: "number" }, call.open ? "open" : formatMoney(call.charged)))))
    : empty("No calls.");
}

function keys(rows) {
  return rows.length
    ? table(["Name", "Key", ["Spent", "number"], "State"], rows.map((key) => h("tr", { "data-access-key": key.id },
        h("td", {}, key.name), h("td", { class: "secret-mask" }, `••••${key.last4}`),
        h("td", { class: "number" }, formatMoney(key.spent)), h("td", {}, key.revoked_at ? "revoked" : "live"))))
    : empty("No access keys.");
}

export async function render({ params, signal }) {
  const url = `${ADMIN}/users/${encodeURIComponent(params.user)}`;
  const holder = h("div", {});
  const show = async () => {
    const file = await get(url, signal);
    replace(holder, h("p", { class: "aside", "data-user-state": file.user.is_active ? "active" : "disabled" },
                      `${file.user.username} · ${file.user.is_active ? "active" : "disabled"}`),
            section("Balance", balanceSummary(file.balance)), section("Ledger", ledger(file.transactions)),
            section("Access keys", keys(file.access_keys)), section("Calls", calls(file.calls)));
    return file;
  };
  const file = await show();
  const amount = () => field("Amount in USD", { name: "amount", inputmode: "decimal", autocomplete: "off", required: true });
  const money = (action, verb) => {
    const fields = { amount: amount() };
    return actionForm(verb, fields, async ({ reason }) => {
      const done = await post(`${url}/${action}`, { amount: fields.amount.input.value.trim(), reason },
                              { headers: { "Idempotency-Key": crypto.randomUUID() } });
      await show();
      return `${verb}ed ${formatMoney(done.transaction.amount)}.`;
    });
  };
  const standing = (action, verb) => actionForm(verb, {}, async ({ reason }) => {
    await post(`${url}/${action}`, { reason });
    await show();
    return `${verb}d.`;
  });
  return [h("h1", {}, file.user.email), holder,
          section("Credit (a refund, a goodwill credit)", money("credit", "Credit")),
          section("Debit (never below zero)", money("debit", "Debit")),
          section("Disable or enable", standing("disable", "Disable"), standing("enable", "Enable"))];
}
