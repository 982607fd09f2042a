// The signed-in session. The access token lives in this module's memory only;
// the refresh token lives in the httpOnly cookie `qm_refresh`, which only the
// server reads. The token is refreshed a minute before it expires.
import { send } from "./http.js";

const AUTH = "/api/v1/auth";
const EARLY_SECONDS = 60;
let accessToken = null;
let currentUser = null;
let refreshTimer = null;
let refreshing = null;

export const signedIn = () => accessToken !== null;
export const user = () => currentUser;
export const token = () => accessToken;

function adopt(pair) {
  accessToken = pair.access_token;
  currentUser = pair.user;
  clearTimeout(refreshTimer);
  const seconds = pair.expires_in > 2 * EARLY_SECONDS ? pair.expires_in - EARLY_SECONDS : pair.expires_in / 2;
  refreshTimer = setTimeout(() => refresh().catch(() => {}), seconds * 1000);
}

function forget() {
  accessToken = null;
  currentUser = null;
  clearTimeout(refreshTimer);
}

// Tells the shell the session is over, with the words to show on the sign-in page.
export function end(message) {
  forget();
  window.dispatchEvent(new CustomEvent("qm:signed-out", { detail: message }));
}

export async function signIn(email, password) {
  adopt(await send(`${AUTH}/login`, { method: "POST", body: { email, password } }));
}

export async function register(email, username, password) {
  await send(`${AUTH}/register`, { method: "POST", body: { email, username, password } });
  await signIn(email, password);
}

// Spends the cookie for a new pair. One tab at a time: a tab that waited sends
// the cookie the one before it was given, since the server ends every session
// when a spent refresh token comes back (tabs reopened together would).
function refreshFromCookie() {
  const spend = () => send(`${AUTH}/refresh`, { method: "POST", body: {} });
  return navigator.locks ? navigator.locks.request("qm-refresh", spend) : spend();
}

// A new access token from the cookie; one request however many callers ask at once.
export function refresh() {
  refreshing ??= refreshFromCookie()
    .then(adopt)
    .catch((error) => {
      if (error.status === 401) end("Your session has ended. Sign in again.");
      throw error;
    })
    .finally(() => { refreshing = null; });
  return refreshing;
}

// The server sets `qm_signed_in` beside the refresh cookie (which no script
// reads): without it there is no session to restore, and nothing is asked.
const HINT = "qm_signed_in";
const mayRestore = () => document.cookie.split("; ").includes(`${HINT}=1`);
const dropHint = () => { document.cookie = `${HINT}=; Max-Age=0; Path=/; SameSite=Strict`; };

// On a reload: the session the cookie still holds, if any. Never throws.
export async function restore() {
  if (!mayRestore()) return false;
  try {
    adopt(await refreshFromCookie());
    return true;
  } catch {
    forget();
    dropHint();
    return false;
  }
}

export async function signOut() {
  try {
    await send(`${AUTH}/logout`, { method: "POST", headers: { Authorization: `Bearer ${accessToken}` } });
  } finally {
    end("You have signed out.");
  }
}
