import { get, post, remove } from "../api.js";
import { confirmButton, describeError, empty, field, formAlert, formatDate, h, replace, section, select, sendingForm, table } from "../ui.js";

const PROVIDERS = [["openai", "OpenAI"], ["anthropic", "Anthropic"]];

// What a call to each provider will use: the user's key wins (BYOK, with the
// fee), else the service's house key, else the call fails for lack of a key.
function whoPays(terms, keys) {
  const feePercent = `${(Number(terms.byok_fee_rate) * 100).toLocaleString()}%`;
  return table(["Provider", "A call uses"], [
    h("tr", {}, h("td", {}, "Local"), h("td", {}, "No key needed: the built-in models answer offline.")),
    ...PROVIDERS.map(([provider, name]) => {
      const own = keys.some((key) => key.provider === provider);
      const house = terms.house_keys.includes(provider);
      const verdict = own ? `Your key (BYOK), plus a ${feePercent} fee.`
        : house ? "The service's house key, at the catalog price."
        : "Nothing: calls fail until you add a key.";
      return h("tr", { "data-provider": provider }, h("td", {}, name), h("td", {}, verdict));
    })]);
}

export async function render({ signal }) {
  const listBody = h("div", {});
  const serviceBody = h("div", {});
  const terms = await get("/api/v1/service", signal);

  async function show() {
    const { keys } = await get("/api/v1/keys", signal);
    replace(serviceBody, whoPays(terms, keys));
    replace(listBody, keys.length
      ? table(["Provider", "Label", "Key", "Added", "Last used", ""], keys.map((key) => h("tr", { "data-key": key.id },
          h("td", {}, key.provider), h("td", {}, key.label || "—"),
          h("td", { class: "secret-mask" }, `••••${key.last4}`),
          h("td", {}, formatDate(key.created_at)), h("td", {}, formatDate(key.last_used_at)),
          h("td", {}, confirmButton("Delete", `Delete the ${key.provider} key ending ${key.last4}?`, async () => {
            try {
              await remove(`/api/v1/keys/${key.id}`);
              alert.show(`Deleted the key ending ${key.last4}.`, "ok");
            } catch (error) {
              alert.show(describeError(error));
            }
            await show();
          })))))
      : empty("No provider keys stored. Calls use the service's house keys where it has them."));
  }

  const fields = {
    provider: field("Provider", { name: "provider", control: select(PROVIDERS, "openai") }),
    api_key: field("API key", { name: "api_key", type: "password", autocomplete: "off",
                                hint: "Stored encrypted; only its last four characters are ever shown again." }),
    label: field("Label (optional)", { name: "label", autocomplete: "off" }),
  };
  const alert = formAlert();
  const form = sendingForm("Add key", { alert, fields, children: Object.values(fields), send: async (sent) => {
    const stored = await post("/api/v1/keys", {
      provider: fields.provider.input.value, api_key: fields.api_key.input.value.trim(),
      label: fields.label.input.value.trim() || null,
    });
    sent.reset();
    alert.show(`Added the ${stored.provider} key ending ${stored.last4}.`, "ok");
    await show();
  } });

  await show();
  return [h("h1", {}, "Provider keys"), alert, section("Your keys", listBody), section("Add a key", form),
          section("Who pays for a call", serviceBody)];
}
