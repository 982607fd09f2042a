// Spend per day stacked by model, drawn as SVG by hand: one column per day, one
// segment per model, exact day totals in each segment's tooltip. Its words are
// HTML around the drawing, so they keep their size however narrow it is drawn.
import { compareMoney, exactMoney, formatMoney, ratio, sumMoney } from "./money.js";
import { h } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fde", "#e8793a", "#2a9d6f", "#b3489c", "#c9a227", "#5b5bd6", "#d1495b", "#3a8fa8"];
const WIDTH = 720;
const HEIGHT = 220;
const PAD = { top: 4, right: 8, bottom: 4, left: 8 };
let chartCount = 0;

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

// `days`: the ISO dates to show, oldest first; `rows`: [{day, model_id, cost, requests}].
export function spendChart(days, rows, { title }) {
  const models = [...new Set(rows.map((row) => row.model_id))].sort();
  const color = (model) => PALETTE[models.indexOf(model) % PALETTE.length];
  const byDay = new Map(days.map((day) => [day, rows.filter((row) => row.day === day)]));
  const totals = new Map(days.map((day) => [day, sumMoney(byDay.get(day).map((row) => row.cost))]));
  const highest = [...totals.values()].reduce((a, b) => (compareMoney(a, b) >= 0 ? a : b), "0");
  const total = sumMoney(rows.map((row) => row.cost));
  const id = `chart-${++chartCount}`;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = (WIDTH - PAD.left - PAD.right) / days.length;

  const columns = days.map((day, index) => {
    let top = HEIGHT - PAD.bottom;
    const x = PAD.left + index * slot + slot * 0.15;
    return byDay.get(day).map((row) => {
      const height = Math.max(1, ratio(row.cost, highest) * plotHeight);
      top -= height;
      const label = `${day} · ${row.model_id}: ${exactMoney(row.cost)}, ${row.requests} request${row.requests === 1 ? "" : "s"}` +
                    ` (day total ${exactMoney(totals.get(day))})`;
      return svg("rect", { class: "bar", "data-model": row.model_id, "data-day": day, x, y: top,
                           width: slot * 0.7, height, fill: color(row.model_id) }, svg("title", {}, label));
    });
  });
  const axis = h("div", { class: "chart-axis", "aria-hidden": "true" },
    [0, Math.floor((days.length - 1) / 2), days.length - 1].map((index) => h("span", {}, days[index].slice(5))));

  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart",
                             "aria-labelledby": `${id}-title ${id}-desc` },
    svg("title", { id: `${id}-title` }, title),
    svg("desc", { id: `${id}-desc` }, `From ${days[0]} to ${days.at(-1)}: ${formatMoney(total)} in all across ` +
                                      `${models.length} model${models.length === 1 ? "" : "s"}; the busiest day cost ${formatMoney(highest)}.`),
    svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: HEIGHT - PAD.bottom, y2: HEIGHT - PAD.bottom, class: "baseline" }),
    ...columns.flat());

  const legend = h("ul", { class: "legend" }, models.map((model) => h("li", {},
    svg("svg", { viewBox: "0 0 10 10", width: 12, height: 12, "aria-hidden": "true" }, svg("rect", { width: 10, height: 10, fill: color(model) })),
    ` ${model}: ${formatMoney(sumMoney(rows.filter((row) => row.model_id === model).map((row) => row.cost)))}`)));
  return h("figure", { class: "chart-figure" }, h("p", { class: "chart-max" }, `Busiest day: ${formatMoney(highest)}`),
           chart, axis, legend);
}

// The last `count` UTC dates ending today, oldest first, as YYYY-MM-DD.
export function lastDays(count) {
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  return Array.from({ length: count }, (_, index) => new Date(today - (count - 1 - index) * 86400000).toISOString().slice(0, 10));
}
