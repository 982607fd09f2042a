import * as auth from "../auth.js";
import { field, formAlert, h, link, sendingForm } from "../ui.js";

export function render({ navigate }) {
  const fields = {
    email: field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
    username: field("Username", { name: "username", autocomplete: "username", required: true,
                                  hint: "3 to 32 letters, digits, dots, dashes or underscores." }),
    password: field("Password", { name: "password", type: "password", autocomplete: "new-password", required: true,
                                  hint: "At least 8 characters." }),
  };
  const alert = formAlert();
  const form = sendingForm("Create account", { alert, fields, className: "card narrow", send: async () => {
    await auth.register(fields.email.input.value.trim(), fields.username.input.value.trim(), fields.password.input.value);
    await navigate("/console/overview", { replaceState: true });
  } });

  return [h("h1", {}, "Create an account"), form,
          h("p", { class: "aside" }, "Already registered? ", link("/console/signin", "Sign in"), ".")];
}
