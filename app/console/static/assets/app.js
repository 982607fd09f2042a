// The console's shell: routes each /console/<page> URL to its page module, keeps
// the navigation, and catches every failure so a page never goes blank.
import * as auth from "./auth.js";
import { get } from "./api.js";
import { applyTheme, describeError, h, link, replace } from "./ui.js";

const BASE = "/console";
const PAGES = [
  // [pattern, module, title, public]
  [/^\/signin$/, "signin", "Sign in", true],
  [/^\/register$/, "register", "Create an account", true],
  [/^\/overview$/, "overview", "Overview"],
  [/^\/topup$/, "topup", "Top up"],
  [/^\/keys$/, "keys", "Provider keys"],
  [/^\/access-keys$/, "access-keys", "Access keys"],
  [/^\/models$/, "models", "Models"],
  [/^\/models\/(?<provider>[^/]+)\/(?<name>[^/]+)$/, "model", "Model"],
  [/^\/recommend$/, "recommend", "Recommend"],
  [/^\/chat$/, "chat", "Chat"],
  [/^\/chat\/(?<session>[^/]+)$/, "conversation", "Chat"],
  [/^\/preferences$/, "preferences", "Preferences"],
  [/^\/webhooks$/, "webhooks", "Webhooks"],
  [/^\/admin\/users$/, "admin-users", "Users"],
  [/^\/admin\/users\/(?<user>[^/]+)$/, "admin-user", "User"],
  [/^\/admin\/models$/, "admin-models", "Catalog admin"],
  [/^\/admin\/holds$/, "admin-holds", "Holds"],
  [/^\/admin\/audit$/, "admin-audit", "Audit log"],
];
const NAV = [["overview", "Overview"], ["topup", "Top up"], ["keys", "Provider keys"], ["access-keys", "Access keys"],
             ["models", "Models"], ["recommend", "Recommend"], ["chat", "Chat"], ["preferences", "Preferences"],
             ["webhooks", "Webhooks"]];
// Shown to admins only (the API refuses everyone else anyway).
const ADMIN_NAV = [["admin/users", "Users"], ["admin/models", "Catalog admin"], ["admin/holds", "Holds"],
                   ["admin/audit", "Audit log"]];

const main = document.getElementById("main");
const alertRegion = document.getElementById("alert");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
let current = null; // the page being shown: {controller}
let notice = ""; // a message for the sign-in page

function showAlert(...content) {
  replace(alertRegion, ...content);
  alertRegion.hidden = content.length === 0;
}

export function navigate(path, { replaceState = false } = {}) {
  if (replaceState) history.replaceState(null, "", path);
  else {
    history.pushState(null, "", path);
    window.scrollTo(0, 0);
  }
  return render();
}

function match(pathname) {
  const page = pathname.slice(BASE.length).replace(/\/+$/, "") || "/overview";
  for (const [pattern, module, title, open] of PAGES) {
    const found = page.match(pattern);
    if (found) return { module, title, open: Boolean(open), params: decodeParams(found.groups || {}) };
  }
  return null;
}

const decodeParams = (groups) => Object.fromEntries(Object.entries(groups).map(([k, v]) => [k, decodeURIComponent(v)]));

function drawShell(route) {
  const signed = auth.signedIn();
  nav.hidden = account.hidden = !signed;
  if (!signed) return;
  const pages = auth.user()?.is_admin ? [...NAV, ...ADMIN_NAV] : NAV;
  replace(nav, h("ul", {}, pages.map(([page, text]) => {
    const active = route && (route.module === page.replace("/", "-") ||
                             (page === "chat" && route.module === "conversation") ||
                             (page === "models" && route.module === "model") ||
                             (page === "admin/users" && route.module === "admin-user"));
    return h("li", {}, link(`${BASE}/${page}`, text, { "aria-current": active ? "page" : null }));
  })));
  replace(account, h("span", { class: "who" }, auth.user()?.username || ""), " ",
          h("button", { type: "button", onclick: () => auth.signOut().catch(() => {}) }, "Sign out"));
}

async function render() {
  current?.controller.abort();
  const controller = new AbortController();
  const page = { controller };
  current = page;
  showAlert();
  const route = match(location.pathname);
  try {
    if (location.pathname === "/" || location.pathname === BASE || location.pathname === `${BASE}/`) {
      // The console's front door: nothing was refused, so sign-in shows no notice.
      return navigate(`${BASE}/${auth.signedIn() ? "overview" : "signin"}`, { replaceState: true });
    }
    if (!route) throw new Error(`There is no page at ${location.pathname}.`);
    if (!route.open && !auth.signedIn()) {
      notice = notice || "Sign in to see that page.";
      const next = encodeURIComponent(location.pathname + location.search);
      return navigate(`${BASE}/signin?next=${next}`, { replaceState: true });
    }
    if (route.open && auth.signedIn()) return navigate(`${BASE}/overview`, { replaceState: true });
    drawShell(route);
    document.title = `${route.title} · Q Marketplace`;
    replace(main, h("p", { class: "loading", role: "status" }, "Loading…"));
    const module = await import(`./pages/${route.module}.js`);
    if (current !== page) return;
    const content = await module.render({
      params: route.params, search: new URLSearchParams(location.search), signal: controller.signal,
      navigate, notice: takeNotice(),
    });
    if (current !== page) return;
    replace(main, content);
    const heading = main.querySelector("h1");
    if (heading) document.title = `${heading.textContent} · Q Marketplace`;
    main.focus({ preventScroll: true });
  } catch (error) {
    if (current !== page || error.name === "AbortError") return;
    drawShell(route);
    replace(main, h("h1", {}, "This page could not be shown"),
            h("p", {}, "Use the navigation to go elsewhere, or ", h("a", { href: location.pathname + location.search }, "try again"), "."));
    showAlert(...describeError(error));
  }
}

function takeNotice() {
  const text = notice;
  notice = "";
  return text;
}

// Links inside the console change the page without reloading it.
document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[href]");
  if (!anchor || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey ||
      event.shiftKey || event.altKey || anchor.target) return;
  const url = new URL(anchor.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(`${BASE}/`)) return;
  event.preventDefault();
  if (url.hash && url.pathname === location.pathname) return document.querySelector(url.hash)?.focus();
  navigate(url.pathname + url.search);
});

window.addEventListener("popstate", render);

window.addEventListener("qm:signed-out", (event) => {
  notice = event.detail;
  drawShell(null);
  navigate(`${BASE}/signin`);
});

// A failure nothing else caught still shows in words, never as a blank page.
window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  if (event.reason?.name !== "AbortError") showAlert(...describeError(event.reason || new Error("Something went wrong.")));
});
window.addEventListener("error", (event) => showAlert(...describeError(event.error || new Error(event.message))));

async function start() {
  await auth.restore();
  if (auth.signedIn()) get("/api/v1/preferences").then((p) => applyTheme(p.theme)).catch(() => {});
  await render();
}

start();
