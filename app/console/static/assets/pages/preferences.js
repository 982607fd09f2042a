import { get, put } from "../api.js";
import { PROVIDERS } from "../catalog.js";
import { applyTheme, checkboxes, field, formAlert, h, section, select, sendingForm } from "../ui.js";

const THEMES = [["system", "Same as the system"], ["light", "Light"], ["dark", "Dark"]];
const FALLBACK = [["false", "Fail the call: my own keys only"], ["true", "Fall back to the service's keys"]];
const EMAIL_ALERTS = [["false", "No: webhooks only"], ["true", "Yes, to my account's email too"]];

export async function render({ signal }) {
  const [preferences, { models }] = await Promise.all([get("/api/v1/preferences", signal), get("/api/v1/models?sort=id", signal)]);
  // Amounts are typed as text: the API checks them and its message shows beside the field.
  const fields = {
    default_model_id: field("Default model", { name: "default_model_id",
      control: select([["", "None"], ...models.map((model) => [model.id, model.id])], preferences.default_model_id) }),
    preferred_providers: checkboxes("Preferred providers", "preferred_providers", PROVIDERS, preferences.preferred_providers),
    daily_spend_limit: field("Daily spend limit in USD", { name: "daily_spend_limit", inputmode: "decimal", autocomplete: "off",
      value: preferences.daily_spend_limit ?? "", hint: "Empty: no limit. Calls that would pass it are refused." }),
    max_cost_per_message: field("Highest cost of one message in USD", { name: "max_cost_per_message", inputmode: "decimal",
      autocomplete: "off", value: preferences.max_cost_per_message ?? "", hint: "Empty: no limit." }),
    theme: field("Theme", { name: "theme", control: select(THEMES, preferences.theme) }),
    house_key_fallback: field("When a provider you hold a key for fails", { name: "house_key_fallback",
      control: select(FALLBACK, String(preferences.house_key_fallback)),
      hint: "Another provider's key of this service costs the catalog price, not the fee for your own keys." }),
    low_balance_threshold: field("Alert when my balance falls below, in USD", { name: "low_balance_threshold",
      inputmode: "decimal", autocomplete: "off", value: preferences.low_balance_threshold ?? "",
      hint: "Empty: no alert. Sent once, again after a top-up lifts the balance above it." }),
    email_alerts: field("Email my alerts", { name: "email_alerts",
      control: select(EMAIL_ALERTS, String(preferences.email_alerts)),
      hint: "Alerts always go to your webhooks, which you add on the Webhooks page." }),
  };
  const alert = formAlert();
  const amount = (name) => fields[name].input.value.trim() || null;
  const form = sendingForm("Save preferences", { alert, fields, send: async () => {
    const saved = await put("/api/v1/preferences", {
      default_model_id: fields.default_model_id.input.value || null,
      preferred_providers: fields.preferred_providers.values(),
      daily_spend_limit: amount("daily_spend_limit"),
      max_cost_per_message: amount("max_cost_per_message"),
      theme: fields.theme.input.value,
      house_key_fallback: fields.house_key_fallback.input.value === "true",
      low_balance_threshold: amount("low_balance_threshold"),
      email_alerts: fields.email_alerts.input.value === "true",
    });
    applyTheme(saved.theme);
    alert.show("Preferences saved.", "ok");
  } });

  return [h("h1", {}, "Preferences"), section("Your preferences", form)];
}
