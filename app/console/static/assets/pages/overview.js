import { get, query } from "../api.js";
import { balanceSummary } from "../balance.js";
import { lastDays, spendChart } from "../chart.js";
import { exactMoney, moneyText } from "../money.js";
import { empty, formatDate, h, lazySection, link, table } from "../ui.js";

const DAYS = 30;

async function spend(signal) {
  const days = lastDays(DAYS);
  const { usage } = await get(`/api/v1/usage${query({ from: days[0], to: days.at(-1), group_by: "day,model" })}`, signal);
  if (!usage.length) return empty("No spend in the last 30 days.", link("/console/chat", "Start a chat"));
  return spendChart(days, usage, { title: `Spend per day for the last ${DAYS} days, by model` });
}

// One row per call or deposit, in words: what happened, on which model, for how many tokens.
function describeActivity(item) {
  if (item.kind === "deposit") return "Deposit";
  const model = item.session_id ? link(`/console/chat/${item.session_id}`, item.model_id) : item.model_id;
  if (item.status === "in_progress") {
    return [h("span", { class: "money-note" }, moneyText(item.reserved), " reserved for a call in progress"), " · ", model];
  }
  if (item.status === "failed") return ["Call to ", model, " failed: nothing charged"];
  const tokens = item.prompt_tokens === null ? "" : ` · ${item.prompt_tokens} prompt + ${item.completion_tokens} answer tokens`;
  return ["Call to ", model, tokens, item.charge ? chargeParts(item.charge, item.price_version_id) : ""];
}

// A settled call's charge by part, exact; the cache's parts only where there were any;
// and the price book's version it was priced by.
function chargeParts(charge, priceVersion) {
  const parts = [[`${charge.input_tokens} input`, charge.input_cost],
                 [`${charge.cached_input_tokens} cached`, charge.cached_input_cost],
                 [`${charge.cache_write_tokens + charge.cache_write_1h_tokens} cache writes`, charge.cache_write_cost],
                 [`${charge.output_tokens} output`, charge.output_cost]]
    .filter(([, cost], index) => index === 0 || index === 3 || Number(cost) > 0);
  return h("details", { class: "charge-parts" }, h("summary", {}, "Details"),
           `${exactMoney(charge.cost)}: ` + parts.map(([what, cost]) => `${what} ${exactMoney(cost)}`).join(", ")
           + (priceVersion ? `, at price version ${priceVersion}` : ""));
}

async function activity(signal) {
  const { activity: items } = await get("/api/v1/activity?limit=10", signal);
  if (!items.length) return empty("Nothing yet.", link("/console/topup", "Top up"), " to begin.");
  return [table(["When", "What", ["Amount", "number"]], items.map((item) => h("tr", { "data-activity": item.id, "data-kind": item.kind, "data-status": item.status },
      h("td", {}, formatDate(item.created_at)), h("td", {}, describeActivity(item)),
      h("td", { class: "number" }, moneyText(item.amount, { sign: true })))), "Your ten latest calls and deposits"),
    h("p", { class: "hint" }, "− is money spent, + money added. Every ledger entry is on ", link("/console/topup", "Top up"), ".")];
}

export function render({ signal }) {
  return [
    h("h1", {}, "Overview"),
    lazySection("Balance", "the balance", async () => [balanceSummary(await get("/api/v1/balance", signal)),
                                                        h("p", {}, link("/console/topup", "Top up"))]),
    lazySection("Spend, last 30 days", "the spend", () => spend(signal)),
    lazySection("Recent activity", "the activity", () => activity(signal)),
  ];
}
