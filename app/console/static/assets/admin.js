// What the admin pages share: a reason field, which every admin action requires
// and the audit log keeps, and a form that sends one admin action.
import { field, formAlert, sendingForm } from "./ui.js";

export const ADMIN = "/api/v1/admin";

export const reasonField = (name = "reason") =>
  field("Reason (kept in the audit log)", { name, autocomplete: "off", required: true, maxlength: 400 });

// A form of `fields` plus a reason; `send(values)` gets the reason too. `done` says what happened.
export function actionForm(label, fields, send, className = "card") {
  const alert = formAlert();
  const reason = reasonField();
  const all = { ...fields, reason };
  return sendingForm(label, { alert, fields: all, className, send: async (form) => {
    const message = await send({ reason: reason.input.value.trim() });
    form.reset();
    alert.show(message, "ok");
  } });
}
