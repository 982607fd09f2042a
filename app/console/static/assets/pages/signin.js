import * as auth from "../auth.js";
import { field, formAlert, h, link } from "../ui.js";

// Only console pages are followed after signing in, never another site.
const safeNext = (next) => (next && /^\/console\/[^/]/.test(next) ? next : "/console/overview");

export function render({ search, navigate, notice }) {
  const email = field("Email", { name: "email", type: "email", autocomplete: "email", required: true });
  const password = field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const alert = formAlert();
  if (notice) alert.show(notice, "info");
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card narrow", novalidate: true, onsubmit }, alert, email, password, submit);

  async function onsubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    alert.clear();
    try {
      await auth.signIn(email.input.value.trim(), password.input.value);
      await navigate(safeNext(search.get("next")), { replaceState: true });
    } catch (error) {
      alert.show(error.message);
      submit.disabled = false;
    }
  }

  return [h("h1", {}, "Sign in"), form,
          h("p", { class: "aside" }, "New here? ", link("/console/register", "Create an account"), ".")];
}
