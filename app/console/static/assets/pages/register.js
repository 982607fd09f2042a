import * as auth from "../auth.js";
import { field, formAlert, h, link, showFieldErrors } from "../ui.js";

export function render({ navigate }) {
  const fields = {
    email: field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
    username: field("Username", { name: "username", autocomplete: "username", required: true,
                                  hint: "3 to 32 letters, digits, dots, dashes or underscores." }),
    password: field("Password", { name: "password", type: "password", autocomplete: "new-password", required: true,
                                  hint: "At least 8 characters." }),
  };
  const alert = formAlert();
  const submit = h("button", { type: "submit", class: "primary" }, "Create account");
  const form = h("form", { class: "card narrow", novalidate: true, onsubmit }, alert, Object.values(fields), submit);

  async function onsubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    alert.clear();
    try {
      await auth.register(fields.email.input.value.trim(), fields.username.input.value.trim(), fields.password.input.value);
      await navigate("/console/overview", { replaceState: true });
    } catch (error) {
      const rest = showFieldErrors(fields, error);
      alert.show([error.message, ...rest].join(" "));
      submit.disabled = false;
    }
  }

  return [h("h1", {}, "Create an account"), form,
          h("p", { class: "aside" }, "Already registered? ", link("/console/signin", "Sign in"), ".")];
}
