// The balance as the API last gave it; never added up here.
import { exactMoney, formatMoney } from "./money.js";
import { h } from "./ui.js";

const PARTS = [["available_balance", "Available"], ["total_balance", "Total deposited"],
               ["spent_balance", "Spent"], ["held_balance", "Reserved for calls in progress"]];

export function balanceSummary(balance) {
  return h("dl", { class: "balance", "data-balance": balance.available_balance },
    PARTS.map(([key, label]) => h("div", { class: `figure figure-${key}` }, h("dt", {}, label),
                                  h("dd", { "data-amount": balance[key], title: exactMoney(balance[key]) }, formatMoney(balance[key])))));
}
