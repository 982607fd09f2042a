// Small DOM helpers shared by the pages: element building, labelled fields with
// their error beside them, alerts, loading and empty states, inline confirmation.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export const replace = (element, ...children) => { element.replaceChildren(); return append(element, children); };

export const link = (href, text, attributes = {}) => h("a", { href, ...attributes }, text);

let fieldCount = 0;

// A labelled input (or select/textarea when `control` is given) with a hint and a
// slot for the API's message about it; `field.input`, `field.showError(text)`.
export function field(label, { name, control, hint, ...attributes }) {
  const id = `field-${name}-${++fieldCount}`;
  const input = control || h("input", { name, ...attributes });
  input.id = id;
  input.name = name;
  const hintElement = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  input.setAttribute("aria-describedby", [hintElement && hintElement.id, error.id].filter(Boolean).join(" "));
  const wrapper = h("div", { class: "field", "data-field": name }, h("label", { for: id }, label), input, hintElement, error);
  wrapper.input = input;
  wrapper.showError = (text) => {
    error.textContent = text || "";
    error.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  };
  return wrapper;
}

export function select(options, value) {
  const element = h("select", {}, options.map(([optionValue, text]) => h("option", { value: optionValue }, text)));
  element.value = value ?? "";
  return element;
}

// A group of checkboxes under a legend; `group.values()` reads the checked ones.
export function checkboxes(legend, name, options, checked = []) {
  const boxes = options.map(([value, text]) => {
    const id = `field-${name}-${++fieldCount}`;
    const box = h("input", { type: "checkbox", id, name, value, checked: checked.includes(value) });
    return h("div", { class: "check" }, box, h("label", { for: id }, text));
  });
  const error = h("p", { class: "field-error", hidden: true });
  const group = h("fieldset", { class: "field checks", "data-field": name }, h("legend", {}, legend), boxes, error);
  group.values = () => [...group.querySelectorAll("input:checked")].map((box) => box.value);
  group.showError = (text) => { error.textContent = text || ""; error.hidden = !text; };
  return group;
}

// Shows the API's per-field messages beside their fields; the rest in the form's alert.
export function showFieldErrors(fields, error) {
  for (const each of Object.values(fields)) each.showError("");
  const unplaced = [];
  for (const [name, message] of Object.entries(error.details || {})) {
    const target = fields[name.split(".")[0]];
    if (target && typeof message === "string") target.showError(message);
    else unplaced.push(`${name}: ${typeof message === "string" ? message : JSON.stringify(message)}`);
  }
  return unplaced;
}

// A form that sends itself, one submission at a time: its button is disabled
// while `send(form)` runs. A refusal shows in `alert` in words that say what to
// do, with the API's messages beside their fields; `failed(error)` takes back
// what the page showed ahead of the answer. A page left meanwhile shows nothing.
export function sendingForm(label, { alert, fields = {}, children = [alert, Object.values(fields)], send, failed, className }) {
  const submit = h("button", { type: "submit", class: "primary" }, label);
  const form = h("form", { class: className, novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    alert.clear();
    showFieldErrors(fields, {});
    submit.disabled = true;
    try {
      await send(form);
    } catch (error) {
      if (error.name === "AbortError") return;
      failed?.(error);
      const unplaced = showFieldErrors(fields, error);
      alert.show([describeError(error), unplaced.length ? ` ${unplaced.join(" ")}` : ""]);
    } finally {
      submit.disabled = false;
    }
  } }, children, submit);
  return form;
}

// A form's own alert region, for messages about what the form just did.
export function formAlert() {
  const element = h("div", { class: "notice", role: "alert", hidden: true });
  element.show = (content, kind = "error") => {
    element.className = `notice notice-${kind}`;
    replace(element, content);
    element.hidden = !element.textContent;
  };
  element.clear = () => element.show("");
  return element;
}

export const loading = (what) => h("p", { class: "loading", role: "status" }, `Loading ${what}…`);
export const empty = (text, ...extra) => h("div", { class: "empty" }, h("p", {}, text), ...extra);

// A button that asks "Sure?" in place before doing something that cannot be undone.
export function confirmButton(label, question, action) {
  const holder = h("span", { class: "confirm" });
  const start = h("button", { type: "button", class: "danger", onclick: ask }, label);
  holder.append(start);
  function ask() {
    const yes = h("button", { type: "button", class: "danger", onclick: run }, `Yes, ${label.toLowerCase()}`);
    const no = h("button", { type: "button", onclick: () => { replace(holder, start); start.focus(); } }, "Cancel");
    replace(holder, h("span", { class: "question" }, question), " ", yes, " ", no);
    no.focus();
  }
  async function run(event) {
    event.target.disabled = true;
    await action();
  }
  return holder;
}

// `headings`: texts, or [text, class] for a column such as numbers aligned right.
// Each cell carries its column's name, so that narrow screens can show rows as cards.
export function table(headings, rows, caption) {
  const names = headings.map((heading) => (Array.isArray(heading) ? heading[0] : heading))
    .map((name) => (name instanceof Node ? name.textContent.replace(/[▼]/g, "").trim() : name));
  for (const row of rows) [...row.children].forEach((cell, index) => names[index] && cell.setAttribute("data-label", names[index]));
  return h("div", { class: "table-wrap" },
    h("table", {}, caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headings.map((heading) => {
        const [text, className] = Array.isArray(heading) ? heading : [heading, null];
        return h("th", { scope: "col", class: className }, text);
      }))),
      h("tbody", {}, rows)));
}

export function formatDate(iso) {
  if (!iso) return "never";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function stars(average) {
  if (average === null || average === undefined) return "not rated";
  const rounded = Math.round(Number(average));
  return `${"★".repeat(rounded)}${"☆".repeat(5 - rounded)} ${Number(average).toFixed(1)}`;
}

export function section(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

// What to do about a model that needs a key, with a link to where keys are added.
export function needsKeyAdvice(provider) {
  const name = { openai: "OpenAI", anthropic: "Anthropic" }[provider] || provider || "This provider's";
  return [`${name} models need an API key before you can call them. Add yours on `,
          link("/console/keys", "Provider keys"), ", or pick a model marked “Ready”."];
}

// The one place API errors become words that say what to do next.
export function describeError(error) {
  const advice = {
    insufficient_funds: ["Your balance is too low for this. ", link("/console/topup", "Top up"), " and try again."],
    spend_limit_reached: ["A spend limit stops this. Raise it in ", link("/console/preferences", "Preferences"),
                          " or wait for the period to end."],
    provider_error: ["The model's provider failed to answer. Try again, or pick another model."],
    provider_timeout: ["The model's provider took too long. Try again, or pick another model."],
    rate_limited: ["Too many requests. Wait a moment and try again."],
  }[error.code];
  if (error.code === "missing_api_key") return needsKeyAdvice(error.details?.provider);  // the console's words, not the API's
  return advice ? [error.message, " ", ...advice] : [error.message || String(error)];
}

export function applyTheme(theme) {
  document.documentElement.dataset.theme = theme || "system";
}

export const errorNotice = (error) => h("div", { class: "notice notice-error", role: "alert" }, describeError(error));

// A list the API pages by cursor: Newer and Older buttons, loading and error states.
// `load(cursor)` fetches a page, `draw(page)` shows it; `list.reload()` goes back to
// the newest page, `list.refresh()` shows the current one again.
export function pagedList(what, load, draw) {
  const body = h("div", {}, loading(what));
  const cursors = [null]; // the cursor of each page shown so far
  async function show() {
    try {
      const page = await load(cursors.at(-1));
      const newer = h("button", { type: "button", disabled: cursors.length === 1, onclick: () => { cursors.pop(); show(); } }, "Newer");
      const older = h("button", { type: "button", disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); show(); } }, "Older");
      replace(body, draw(page), cursors.length > 1 || page.next_cursor ? h("div", { class: "pager" }, newer, older) : null);
    } catch (error) {
      if (error.name !== "AbortError") replace(body, errorNotice(error));
    }
  }
  body.reload = () => { cursors.splice(1); replace(body, loading(what)); return show(); };
  body.refresh = show;
  show();
  return body;
}

// A panel that shows "Loading…" at once, then what `load()` builds, or its error.
export function lazySection(title, what, load) {
  const body = h("div", { class: "panel-body" }, loading(what));
  Promise.resolve().then(load).then(
    (content) => replace(body, content),
    (error) => { if (error.name !== "AbortError") replace(body, errorNotice(error)); });
  return section(title, body);
}
