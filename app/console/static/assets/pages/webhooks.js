import { get, post, query, remove } from "../api.js";
import { confirmButton, describeError, empty, field, formAlert, formatDate, h, link, pagedList, replace, section, sendingForm, table } from "../ui.js";

const STATES = { none: "No alert sent yet", pending: "Sending (retries on failure)", delivered: "Last alert delivered",
                 failed: "Last alert failed" };
const KINDS = { low_balance: "Low balance", key_spend_80: "Access key at 80% of its limit",
                key_spend_100: "Access key at its limit", daily_limit_reached: "Daily limit reached" };

// The signing secret, shown once (the API never shows it again), with a button that copies it.
function revealed(created) {
  const status = h("span", { role: "status" });
  const copy = h("button", { type: "button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(created.secret);
      status.textContent = "Copied.";
    } catch {
      status.textContent = "Copy failed: select the secret and copy it by hand.";
    }
  } }, "Copy");
  return h("div", { class: "notice notice-ok", "data-secret": "" },
    h("p", {}, `Webhook to ${created.url} added. Copy its signing secret now: it is never shown again. `,
      "Your receiver checks each request's X-QM-Signature with it."),
    h("div", { class: "secret" }, h("code", { class: "secret-value" }, created.secret), copy, status));
}

function outcome(delivery) {
  const parts = [];
  if (delivery.last_status !== null) parts.push(`answered ${delivery.last_status}`);
  if (delivery.last_error) parts.push(delivery.last_error);
  if (delivery.status === "pending" && delivery.next_attempt_at) parts.push(`next try ${formatDate(delivery.next_attempt_at)}`);
  return parts.join(" · ") || "—";
}

function deliveries(webhook, signal) {
  return pagedList("the deliveries", (cursor) => get(`/api/v1/webhooks/${webhook.id}/deliveries${query({ cursor, limit: 10 })}`, signal),
    ({ deliveries: rows }) => (rows.length
      ? table(["When", "Alert", "Status", ["Attempts", "number"], "Last answer"],
          rows.map((delivery) => h("tr", { "data-delivery": delivery.id, "data-status": delivery.status },
            h("td", {}, formatDate(delivery.created_at)), h("td", {}, KINDS[delivery.kind] || delivery.kind),
            h("td", {}, delivery.status), h("td", { class: "number" }, delivery.attempts), h("td", {}, outcome(delivery)))),
          `Alerts sent to ${webhook.url}, newest first`)
      : empty("No alert has been sent to this webhook yet.")));
}

export async function render({ signal }) {
  const secretHolder = h("div", {});
  const alert = formAlert();
  const log = h("div", {}, h("p", { class: "aside" }, "Choose “Deliveries” beside a webhook to see what was sent to it."));
  let shown = null; // the webhook whose deliveries are shown

  function showDeliveries(webhook) {
    shown = webhook.id;
    replace(log, deliveries(webhook, signal));
  }

  const list = pagedList("your webhooks", (cursor) => get(`/api/v1/webhooks${query({ cursor, limit: 10 })}`, signal),
    ({ webhooks }) => (webhooks.length
      ? table(["URL", "Added", "State", ""],
          webhooks.map((webhook) => h("tr", { "data-webhook": webhook.id },
            h("td", { class: "url" }, webhook.url), h("td", {}, formatDate(webhook.created_at)),
            h("td", { "data-state": webhook.last_delivery_status ?? "none" }, STATES[webhook.last_delivery_status ?? "none"]),
            h("td", {}, h("div", { class: "actions" },
              h("button", { type: "button", onclick: () => showDeliveries(webhook) }, "Deliveries"),
              confirmButton("Delete", `Delete the webhook to ${webhook.url}? Alerts stop going there, and its deliveries are forgotten.`,
                async () => {
                  try {
                    await remove(`/api/v1/webhooks/${webhook.id}`);
                    alert.show(`Deleted the webhook to ${webhook.url}.`, "ok");
                    if (shown === webhook.id) replace(log);
                  } catch (error) {
                    alert.show(describeError(error));
                  }
                  await list.refresh();
                }))))))
      : empty("No webhooks yet. Add one to receive your alerts as signed HTTPS requests.")));

  const fields = {
    url: field("URL", { name: "url", type: "url", inputmode: "url", autocomplete: "off", required: true,
      placeholder: "https://example.com/alerts",
      hint: "https:// only, at a public address. Each alert is a signed POST, retried if your receiver fails." }),
  };
  const form = sendingForm("Add webhook", { alert, fields, children: Object.values(fields), send: async (sent) => {
    replace(secretHolder);
    const created = await post("/api/v1/webhooks", { url: fields.url.input.value.trim() });
    sent.reset();
    replace(secretHolder, revealed(created));
    await list.reload();
  } });

  return [h("h1", {}, "Webhooks"),
          h("p", { class: "aside" }, "Your alerts (a low balance, an access key near its limit, the daily limit reached) are sent to each webhook. ",
            "Choose which alerts you get in ", link("/console/preferences", "Preferences"), "."),
          alert, secretHolder, section("Your webhooks", list), section("Add a webhook", form), section("Deliveries", log)];
}
