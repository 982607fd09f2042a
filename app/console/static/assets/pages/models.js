import { get, query } from "../api.js";
import { accessByModel, accessMark, CAPABILITIES, modelPath, PROVIDERS } from "../catalog.js";
import { formatMoney } from "../money.js";
import { empty, field, h, link, select, stars, table } from "../ui.js";

const SORTS = [["popularity", "Popularity"], ["price", "Price"], ["rating", "Rating"], ["id", "Name"]];

export async function render({ search, signal, navigate }) {
  const chosen = { provider: search.get("provider") || "", capability: search.get("capability") || "",
                   sort: search.get("sort") || "popularity" };
  const [{ models }, access] = await Promise.all([get(`/api/v1/models${query(chosen)}`, signal), accessByModel(signal)]);

  // Filters live in the URL, so back/forward and reload keep them.
  const apply = (change) => navigate(`/console/models${query({ ...chosen, ...change })}`);
  const filter = (label, name, options) => {
    const control = select(options, chosen[name]);
    control.addEventListener("change", () => apply({ [name]: control.value }));
    return field(label, { name, control });
  };
  const sortHeading = (text, sort) => h("span", {},
    h("button", { type: "button", "aria-pressed": String(chosen.sort === sort), onclick: () => apply({ sort }) }, text),
    chosen.sort === sort ? " ▼" : "");

  const rows = models.map((model) => h("tr", { "data-model": model.id },
    h("td", {}, link(modelPath(model.id), model.id)),
    h("td", {}, model.provider),
    h("td", {}, accessMark(access.get(model.id))),
    h("td", { class: "number" }, formatMoney(model.input_price_per_mtok)),
    h("td", { class: "number" }, formatMoney(model.output_price_per_mtok)),
    h("td", { class: "number" }, model.context_window.toLocaleString()),
    h("td", {}, model.capabilities.join(", ")),
    h("td", { class: "stars", title: `${model.rating.count} ratings` }, stars(model.rating.average), ` (${model.rating.count})`),
    h("td", { class: "number" }, `#${model.usage.popularity_rank}`)));

  return [
    h("h1", {}, "Models"),
    h("div", { class: "filters" },
      filter("Provider", "provider", [["", "All providers"], ...PROVIDERS]),
      filter("Capability", "capability", [["", "Any capability"], ...CAPABILITIES.map((c) => [c, c])]),
      filter("Sort by", "sort", SORTS)),
    h("p", { class: "hint" }, "Prices are in USD per million tokens. “Needs a key”: add one for its provider on ",
      link("/console/keys", "Provider keys"), " first."),
    models.length
      ? table([sortHeading("Model", "id"), "Provider", "Can you call it?", [sortHeading("Input price", "price"), "number"],
               ["Output price", "number"], ["Context", "number"], "Capabilities", sortHeading("Rating", "rating"),
               [sortHeading("Popularity", "popularity"), "number"]], rows, `${models.length} models`)
      : empty("No model matches these filters.", link("/console/models", "Show all models")),
  ];
}
