import { get, post } from "../api.js";
import { ADMIN, actionForm } from "../admin.js";
import { formatMoney } from "../money.js";
import { empty, formatDate, h, replace, section, table } from "../ui.js";

export async function render({ signal }) {
  const holder = h("div", {});
  const show = async () => {
    const { holds } = await get(`${ADMIN}/holds/overdue`, signal);
    replace(holder, holds.length
      ? table(["Hold", "User", "Model", ["Amount", "number"], "Deadline"], holds.map((hold) => h("tr", { "data-hold": hold.id },
          h("td", {}, hold.id), h("td", {}, hold.email), h("td", {}, hold.model_id || ""),
          h("td", { class: "number" }, formatMoney(hold.amount)), h("td", {}, formatDate(hold.call_deadline)))))
      : empty("No hold is past its deadline."));
  };
  await show();
  const reconcile = actionForm("Reconcile now", {}, async ({ reason }) => {
    const done = await post(`${ADMIN}/holds/reconcile`, { reason });
    await show();
    return `Returned ${done.returned} holds.`;
  });
  const keys = await get(`${ADMIN}/house-keys`, signal);
  const keyTable = table(["Provider", "Setting", "State", "Last failure"], keys.providers.flatMap((provider) =>
    provider.keys.map((key) => h("tr", { "data-house-key": key.setting }, h("td", {}, provider.provider),
      h("td", {}, h("code", {}, key.setting)), h("td", {}, key.state), h("td", {}, lastFailure(key))))));
  return [h("h1", {}, "Holds"), section("Open holds past their deadline", holder, reconcile),
          section("House keys", keyTable)];
}

// As any worker saw it; the state beside it is the answering worker's own.
function lastFailure(key) {
  if (key.last_failed_at === null) return "none";
  return `${key.last_failure_status} at ${formatDate(key.last_failed_at)} (${key.failures} in all)`;
}
