// Requests made as the signed-in user. A 401 `token_expired` refreshes the token
// once and retries; any other 401 means the session was revoked.
import * as auth from "./auth.js";
import { ApiError, errorFromBody, open, parse } from "./http.js";
import { readEvents } from "./sse.js";

async function authorized(path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { ...options.headers };
    if (auth.token()) headers.Authorization = `Bearer ${auth.token()}`;
    const response = await open(path, { ...options, headers });
    if (response.status !== 401 || !auth.signedIn()) return response;
    const error = errorFromBody(401, await response.json().catch(() => null));
    if (error.code === "token_expired" && attempt === 0) {
      await auth.refresh();
      continue;
    }
    auth.end("Your session has ended. Sign in again.");
    throw error;
  }
}

export async function api(path, options) {
  return parse(await authorized(path, options));
}

export const get = (path, signal) => api(path, { signal });
export const post = (path, body, options = {}) => api(path, { ...options, method: "POST", body });
export const put = (path, body) => api(path, { method: "PUT", body });
export const remove = (path) => api(path, { method: "DELETE" });

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// A streamed POST: `onDelta(text)` for each piece, then the `done` event's body.
// Failures before the stream starts are plain JSON errors; later ones an `error` event.
export async function stream(path, body, { onDelta, signal }) {
  const response = await authorized(path, {
    method: "POST", body: { ...body, stream: true }, signal, headers: { Accept: "text/event-stream" },
  });
  if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    return parse(response);
  }
  for await (const { event, data } of readEvents(response.body)) {
    if (event === "delta") onDelta(data.content || "");
    else if (event === "done") return data;
    else if (event === "error") throw errorFromBody(response.status, data);
  }
  throw new ApiError(0, "stream_cut", "The answer stopped before it was complete. Reload the chat to see what was saved.");
}
