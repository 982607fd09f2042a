import { get, post, query } from "../api.js";
import { balanceSummary } from "../balance.js";
import { compareMoney, formatMoney, isAmount, moneyText } from "../money.js";
import { empty, field, formAlert, formatDate, h, pagedList, replace, section, select, sendingForm, table } from "../ui.js";

const TYPES = [["", "All types"], ["deposit", "Deposits"], ["hold", "Holds (reserved when a call starts)"],
               ["release", "Releases (the unused part of a hold, returned when the call ends)"]];
const RETRIES = 2;

// The amount as the API checks it: a decimal with up to 10 places, above 0, at most the maximum.
function amountProblem(text, maxTopup) {
  if (!isAmount(text)) return 'Enter an amount such as "12.50" (digits, at most 10 decimals).';
  if (compareMoney(text, "0") <= 0) return "Enter an amount above zero.";
  if (compareMoney(text, maxTopup) > 0) return `must be at most ${formatMoney(maxTopup)}`;
  return "";
}

// One Idempotency-Key per submission, sent again on its retries: a retried or
// doubled request charges once.
async function topUp(amount) {
  const key = crypto.randomUUID();
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await post("/api/v1/balance/funds", { amount }, { headers: { "Idempotency-Key": key } });
    } catch (error) {
      const transient = error.code === "network" || error.code === "idempotency_in_progress" || error.status >= 502;
      if (!transient || attempt >= RETRIES) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
    }
  }
}

function ledger(signal) {
  const type = field("Type", { name: "type", control: select(TYPES, "") });
  const list = pagedList("the ledger",
    (cursor) => get(`/api/v1/balance/transactions${query({ type: type.input.value, cursor, limit: 10 })}`, signal),
    (page) => (page.transactions.length
      ? table(["When", "Type", "Description", ["Amount", "number"], ["Available after", "number"]],
              page.transactions.map((row) => h("tr", { "data-transaction": row.id },
                h("td", {}, formatDate(row.created_at)), h("td", {}, row.type),
                h("td", {}, row.model_id && !row.description.includes(row.model_id) ? `${row.description} · ${row.model_id}` : row.description),
                h("td", { class: "number" }, moneyText(row.type === "hold" ? `-${row.amount}` : row.amount, { sign: true })),
                h("td", { class: "number" }, moneyText(row.available_after)))))
      : empty("No transactions of this type yet.")));
  type.input.addEventListener("change", () => list.reload());
  const ledgerSection = section("Ledger", h("p", { class: "hint" },
    "Every entry: a call first holds the most it can cost (−), then returns what it did not use (+)."),
    h("div", { class: "filters" }, type), list);
  ledgerSection.reload = list.reload;
  return ledgerSection;
}

export async function render({ signal }) {
  const terms = await get("/api/v1/service", signal);
  const balanceHolder = h("div", {});
  const showBalance = async () => replace(balanceHolder, balanceSummary(await get("/api/v1/balance", signal)));
  const amount = field("Amount in USD", { name: "amount", inputmode: "decimal", autocomplete: "off",
                                          hint: `Up to ${formatMoney(terms.max_topup)} at a time.` });
  const alert = formAlert();
  const ledgerSection = ledger(signal);
  const form = sendingForm("Add funds", { alert, fields: { amount }, className: "card", send: async () => {
    const value = amount.input.value.trim();
    const problem = amountProblem(value, terms.max_topup);
    amount.showError(problem);
    if (problem) return amount.input.focus();
    const result = await topUp(value);
    alert.show(`Added ${formatMoney(result.transaction.amount)}.`, "ok");
    amount.input.value = "";
    await Promise.all([showBalance(), ledgerSection.reload()]);
  } });

  await showBalance();
  return [
    h("h1", {}, "Top up"),
    section("Balance", balanceHolder),
    terms.self_topup_enabled ? form
      : h("div", { class: "notice notice-info" }, "Top-ups are made by the operator on this service; contact them to add funds."),
    ledgerSection,
  ];
}
