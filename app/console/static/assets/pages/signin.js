import * as auth from "../auth.js";
import { field, formAlert, h, link, sendingForm } from "../ui.js";

// Only console pages are followed after signing in, never another site.
const safeNext = (next) => (next && /^\/console\/[^/]/.test(next) ? next : "/console/overview");

export function render({ search, navigate, notice }) {
  const email = field("Email", { name: "email", type: "email", autocomplete: "email", required: true });
  const password = field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const alert = formAlert();
  if (notice) alert.show(notice, "info");
  const form = sendingForm("Sign in", { alert, children: [alert, email, password], className: "card narrow",
    send: async () => {
      await auth.signIn(email.input.value.trim(), password.input.value);
      await navigate(safeNext(search.get("next")), { replaceState: true });
    } });

  return [h("h1", {}, "Sign in"), form,
          h("p", { class: "aside" }, "New here? ", link("/console/register", "Create an account"), ".")];
}
