import { get, query } from "../api.js";
import { balanceSummary } from "../balance.js";
import { lastDays, spendChart } from "../chart.js";
import { formatMoney } from "../money.js";
import { empty, formatDate, h, lazySection, link, table } from "../ui.js";

const DAYS = 30;

async function spend(signal) {
  const days = lastDays(DAYS);
  const { usage } = await get(`/api/v1/usage${query({ from: days[0], to: days.at(-1), group_by: "day,model" })}`, signal);
  if (!usage.length) return empty("No spend in the last 30 days.", link("/console/chat", "Start a chat"));
  return spendChart(days, usage, { title: `Spend per day for the last ${DAYS} days, by model` });
}

function describeActivity(item) {
  if (item.kind === "message") {
    return [`${item.action === "user" ? "Prompt" : "Answer"} · `, link(`/console/chat/${item.session_id}`, item.model_id),
            ` · ${item.prompt_tokens + item.completion_tokens} tokens`];
  }
  return [item.action, item.model_id ? ` · ${item.model_id}` : "", item.charge ? chargeParts(item.charge) : ""];
}

// A settled call's charge by part; the cache's parts only where there were any.
function chargeParts(charge) {
  const parts = [[`${charge.input_tokens} input`, charge.input_cost],
                 [`${charge.cached_input_tokens} cached`, charge.cached_input_cost],
                 [`${charge.cache_write_tokens + charge.cache_write_1h_tokens} cache writes`, charge.cache_write_cost],
                 [`${charge.output_tokens} output`, charge.output_cost]]
    .filter(([, cost], index) => index === 0 || index === 3 || Number(cost) > 0);
  return h("span", { class: "charge-parts" },
           ` · charged ${formatMoney(charge.cost)}: ` + parts.map(([what, cost]) => `${what} ${formatMoney(cost)}`).join(", "));
}

async function activity(signal) {
  const { activity: items } = await get("/api/v1/activity?limit=10", signal);
  if (!items.length) return empty("Nothing yet.", link("/console/topup", "Top up"), " to begin.");
  return table(["When", "What", ["Amount", "number"]], items.map((item) => h("tr", {},
    h("td", {}, formatDate(item.created_at)), h("td", {}, describeActivity(item)),
    h("td", { class: "number" }, formatMoney(item.amount)))), "Your ten latest events");
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
