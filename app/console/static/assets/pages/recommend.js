import { post } from "../api.js";
import { accessMark, CAPABILITIES, modelPath } from "../catalog.js";
import { formatMoney } from "../money.js";
import { checkboxes, empty, field, formAlert, h, link, needsKeyAdvice, replace, section, sendingForm, stars } from "../ui.js";

function results(answer) {
  if (!answer.recommendations.length) return empty(answer.notice || "No model fits. Raise the budget or drop a capability.");
  return [answer.notice ? h("p", { class: "notice notice-info" }, answer.notice) : null,
    h("ol", { class: "recommendations" }, answer.recommendations.map(({ model, score, reasons, access }) => h("li", { "data-model": model.id },
      h("strong", {}, link(modelPath(model.id), model.id)), " ", accessMark(access),
      ` · score ${score.toFixed(2)} · ${formatMoney(model.input_price_per_mtok)} in / ${formatMoney(model.output_price_per_mtok)} out per million tokens · `,
      h("span", { class: "stars" }, stars(model.rating.average)),
      access.callable ? null : h("p", { class: "hint" }, needsKeyAdvice(access.providers[0])),
      h("ul", {}, reasons.map((reason) => h("li", {}, reason))))))];
}

export function render() {
  const fields = {
    task: field("What is the task?", { name: "task", control: h("textarea", { maxlength: 2000, required: true }),
                                       hint: "For example: translate support emails from French to English." }),
    max_price_per_mtok: field("Budget: highest price per million tokens, in USD (optional)",
                              { name: "max_price_per_mtok", inputmode: "decimal", autocomplete: "off" }),
    capabilities: checkboxes("Needs (optional)", "capabilities", CAPABILITIES.map((c) => [c, c])),
    callable_first: checkboxes("Order", "callable_first", [["yes", "Models I can call now first"]], ["yes"]),
  };
  const alert = formAlert();
  const out = h("div", {});
  const form = sendingForm("Recommend", { alert, fields, failed: () => replace(out), send: async () => {
    replace(out, h("p", { class: "loading", role: "status" }, "Ranking the models…"));
    const answer = await post("/api/v1/models/recommend", {
      task: fields.task.input.value.trim(),
      max_price_per_mtok: fields.max_price_per_mtok.input.value.trim() || null,
      capabilities: fields.capabilities.values(),
      callable_first: fields.callable_first.values().length > 0,
    });
    replace(out, section("Ranked for this task", results(answer)));
  } });

  return [h("h1", {}, "Recommend a model"), section("Describe the task", form), out];
}
