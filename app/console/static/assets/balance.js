// The balance as the API last gave it; never added up here.
import { formatMoney } from "./money.js";
import { h } from "./ui.js";

const PARTS = [["available_balance", "Available"], ["total_balance", "Total deposited"],
               ["spent_balance", "Spent"], ["held_balance", "Held for calls in flight"]];

export function balanceSummary(balance) {
  return h("dl", { class: "balance", "data-balance": balance.available_balance },
    PARTS.map(([key, label]) => h("div", { class: `figure figure-${key}` }, h("dt", {}, label),
                                  h("dd", { "data-amount": balance[key] }, formatMoney(balance[key])))));
}
