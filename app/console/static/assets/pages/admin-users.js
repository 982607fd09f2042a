import { get, query } from "../api.js";
import { ADMIN } from "../admin.js";
import { empty, field, formatDate, h, link, pagedList, section, table } from "../ui.js";

export async function render({ signal, search }) {
  const q = field("Email or username", { name: "q", type: "search", autocomplete: "off", value: search.get("q") || "" });
  const list = pagedList("users", (cursor) => get(`${ADMIN}/users${query({ q: q.input.value.trim(), cursor, limit: 20 })}`, signal),
    ({ users }) => (users.length
      ? table(["Email", "Username", "State", "Joined"], users.map((found) => h("tr", { "data-user": found.id },
          h("td", {}, link(`/console/admin/users/${found.id}`, found.email)), h("td", {}, found.username),
          h("td", {}, [found.is_active ? "active" : "disabled", found.is_admin ? " · admin" : ""].join("")),
          h("td", {}, formatDate(found.created_at)))))
      : empty("No user matches.")));
  const form = h("form", { class: "filters", role: "search", onsubmit: (event) => { event.preventDefault(); list.reload(); } },
                 q, h("button", { type: "submit", class: "primary" }, "Search"));
  return [h("h1", {}, "Users"), section("Search", form, list)];
}
