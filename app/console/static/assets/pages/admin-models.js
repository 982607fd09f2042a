import { get, post, api } from "../api.js";
import { ADMIN, actionForm } from "../admin.js";
import { formatMoney } from "../money.js";
import { field, h, replace, section, select, table } from "../ui.js";

const EDITABLE = [["description", "Description"], ["input_price_per_mtok", "Input price per million tokens"],
                  ["output_price_per_mtok", "Output price per million tokens"], ["prices_as_of", "Prices as of (YYYY-MM-DD)"]];

export async function render({ signal }) {
  const holder = h("div", {});
  let models = [];
  const show = async () => {
    ({ models } = await get(`${ADMIN}/models`, signal));
    replace(holder, table(["Model", "State", ["Input", "number"], ["Output", "number"]], models.map((model) =>
      h("tr", { "data-model": model.id }, h("td", {}, model.id), h("td", {}, model.active ? "active" : "disabled"),
        h("td", { class: "number" }, formatMoney(model.input_price_per_mtok)),
        h("td", { class: "number" }, formatMoney(model.output_price_per_mtok))))));
  };
  await show();
  const choice = () => field("Model", { name: "model", control: select(models.map((model) => [model.id, model.id]), models[0]?.id) });

  const which = choice();
  const state = field("Make it", { name: "state", control: select([["disable", "disabled"], ["enable", "active"]], "disable") });
  const toggle = actionForm("Apply", { model: which, state }, async ({ reason }) => {
    await post(`${ADMIN}/models/${which.input.value}/${state.input.value}`, { reason });
    await show();
    return `${which.input.value} is now ${state.input.value === "disable" ? "disabled" : "active"}.`;
  });

  const edited = choice();
  const change = field("Field", { name: "field", control: select(EDITABLE, EDITABLE[0][0]) });
  const value = field("New value", { name: "value", autocomplete: "off" });
  const edit = actionForm("Change", { model: edited, field: change, value }, async ({ reason }) => {
    await api(`${ADMIN}/models/${edited.input.value}`, { method: "PATCH",
      body: { changes: { [change.input.value]: value.input.value.trim() }, reason } });
    await show();
    return `${edited.input.value} changed.`;
  });

  const priced = choice();
  const input = field("Input price per million tokens", { name: "input_price_per_mtok", inputmode: "decimal", autocomplete: "off" });
  const output = field("Output price per million tokens", { name: "output_price_per_mtok", inputmode: "decimal", autocomplete: "off" });
  const starts = field("In force from", { name: "effective_from", type: "datetime-local" });
  const schedule = actionForm("Schedule", { model: priced, input_price_per_mtok: input, output_price_per_mtok: output,
                                            effective_from: starts }, async ({ reason }) => {
    const when = starts.input.value;
    const done = await post(`${ADMIN}/models/${priced.input.value}/prices`, {
      input_price_per_mtok: input.input.value.trim(), output_price_per_mtok: output.input.value.trim(),
      effective_from: when ? new Date(when).toISOString() : "", reason });
    return `Scheduled version ${done.version_id} of ${priced.input.value}.`;
  });
  return [h("h1", {}, "Catalog admin"), section("Models", holder), section("Disable or enable a model", toggle),
          section("Change a model", edit), section("Schedule a price", schedule)];
}
