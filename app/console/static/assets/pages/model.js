import { get, put, query } from "../api.js";
import { lastDays, spendChart } from "../chart.js";
import { formatMoney } from "../money.js";
import { empty, field, formAlert, h, lazySection, link, sendingForm, stars, table } from "../ui.js";

const DAYS = 30;

function facts(model) {
  const rows = [["Provider", model.provider], ["Input price", `${formatMoney(model.input_price_per_mtok)} per million tokens`],
                ["Output price", `${formatMoney(model.output_price_per_mtok)} per million tokens`],
                ["Prices as of", model.prices_as_of], ["Context window", `${model.context_window.toLocaleString()} tokens`],
                ["Longest answer", `${model.max_output_tokens.toLocaleString()} tokens`],
                ["Capabilities", model.capabilities.join(", ") || "—"],
                ["Rating", `${stars(model.rating.average)} from ${model.rating.count} rating${model.rating.count === 1 ? "" : "s"}`],
                ["Popularity", `#${model.usage.popularity_rank}, ${model.usage.request_count.toLocaleString()} request${model.usage.request_count === 1 ? "" : "s"} by everyone`]];
  return h("dl", { class: "facts" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

// The signed-in user's own spend on this model per day.
async function yourUsage(model, signal) {
  const days = lastDays(DAYS);
  const { usage } = await get(`/api/v1/usage${query({ from: days[0], to: days.at(-1), group_by: "day,model" })}`, signal);
  const rows = usage.filter((row) => row.model_id === model.id);
  if (!rows.length) return empty("You have not used this model in the last 30 days.");
  return [spendChart(days, rows, { title: `Your spend on ${model.id} per day, last ${DAYS} days` }),
          table(["Day", ["Requests", "number"], ["Cost", "number"]], rows.map((row) => h("tr", {},
            h("td", {}, row.day), h("td", { class: "number" }, row.requests), h("td", { class: "number" }, formatMoney(row.cost)))))];
}

// Where the model is served, and how each deployment has done lately (as the answering worker measured it).
function deploymentHealth(model) {
  const shown = (value, unit) => (value === null ? "—" : `${value.toLocaleString()}${unit}`);
  return table(["Deployment", "Circuit", ["Calls, 5 min", "number"], ["Errors", "number"],
                ["First token p50 / p95", "number"], ["Tokens/s", "number"]],
    model.deployments.map((deployment) => {
      const recent = deployment.health["5m"];
      return h("tr", { "data-deployment": `${deployment.provider}/${deployment.model}` },
        h("td", {}, `${deployment.provider}: ${deployment.model}`), h("td", {}, deployment.circuit),
        h("td", { class: "number" }, recent.attempts), h("td", { class: "number" }, recent.errors),
        h("td", { class: "number" }, `${shown(recent.first_token_p50_ms, " ms")} / ${shown(recent.first_token_p95_ms, " ms")}`),
        h("td", { class: "number" }, shown(recent.output_tokens_per_second, "")));
    }), "Deployments, in the order calls try them");
}

function ratingForm(model) {
  const choices = [5, 4, 3, 2, 1].map((value) => {
    const id = `rating-${value}`;
    return h("div", { class: "check" }, h("input", { type: "radio", name: "rating", id, value: String(value) }),
             h("label", { for: id }, `${"★".repeat(value)} ${value}`));
  });
  const rating = h("fieldset", { class: "field checks" }, h("legend", {}, "Your rating"), choices);
  const review = field("Review (optional)", { name: "review", control: h("textarea", { maxlength: 2000 }) });
  const alert = formAlert();
  return sendingForm("Save rating", { alert, children: [alert, rating, review], send: async (form) => {
    const picked = form.querySelector("input[name=rating]:checked");
    if (!picked) return alert.show("Pick a rating from 1 to 5 stars.");
    const saved = await put(`/api/v1/models/${model.id}/rating`, { rating: Number(picked.value),
                                                                   review: review.input.value.trim() || null });
    alert.show(`Saved: ${saved.rating} star${saved.rating === 1 ? "" : "s"}.`, "ok");
  } });
}

export async function render({ params, signal }) {
  const model = await get(`/api/v1/models/${encodeURIComponent(params.provider)}/${encodeURIComponent(params.name)}`, signal);
  return [
    h("p", {}, link("/console/models", "← All models")),
    h("h1", {}, model.name),
    h("p", {}, model.description),
    h("section", { class: "panel" }, h("h2", {}, model.id), facts(model),
      h("p", {}, link(`/console/chat?model=${encodeURIComponent(model.id)}`, `Chat with ${model.id}`))),
    h("section", { class: "panel" }, h("h2", {}, "Where it is served"), deploymentHealth(model)),
    lazySection("Your usage by day", "your usage", () => yourUsage(model, signal)),
    h("section", { class: "panel" }, h("h2", {}, "Rate this model"), ratingForm(model)),
  ];
}
