import { get, query } from "../api.js";
import { ADMIN } from "../admin.js";
import { empty, field, formatDate, h, pagedList, section, select, table } from "../ui.js";

const ACTIONS = ["", "grant_admin", "revoke_admin", "credit", "debit", "disable_user", "enable_user", "add_model",
                 "change_model", "disable_model", "enable_model", "schedule_price", "reconcile"];

export async function render({ signal }) {
  const action = field("Action", { name: "action", control: select(ACTIONS.map((name) => [name, name || "All actions"]), "") });
  const user = field("User id", { name: "user_id", autocomplete: "off" });
  const list = pagedList("the audit log", (cursor) => get(`${ADMIN}/audit${query({
      action: action.input.value, user_id: user.input.value.trim(), cursor, limit: 20 })}`, signal),
    ({ actions }) => (actions.length
      ? table(["When", "Admin", "Action", "Target", "Reason"], actions.map((entry) => h("tr", { "data-audit": entry.id },
          h("td", {}, formatDate(entry.created_at)), h("td", {}, entry.admin_email || "owner (command line)"),
          h("td", {}, entry.action), h("td", {}, entry.target_email || entry.target_model || ""), h("td", {}, entry.reason))))
      : empty("No admin action matches.")));
  const form = h("form", { class: "filters", onsubmit: (event) => { event.preventDefault(); list.reload(); } },
                 action, user, h("button", { type: "submit", class: "primary" }, "Filter"));
  return [h("h1", {}, "Audit log"), section("Admin actions", form, list)];
}
