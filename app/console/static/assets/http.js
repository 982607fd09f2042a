// One way to talk to the API: JSON in, JSON out, and every failure as an ApiError
// carrying the API's own {code, message, details}.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

const UNREACHABLE = "Cannot reach the server. Check your connection and try again.";

export function errorFromBody(status, body) {
  const error = body && body.error;
  if (error && typeof error === "object") {
    return new ApiError(status, error.code || "error", error.message || `The server answered ${status}.`,
                        error.details);
  }
  return new ApiError(status, "error", `The server answered ${status}.`);
}

// The fetch itself, with a JSON body when given; a network failure becomes an ApiError.
export async function open(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, signal, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", UNREACHABLE);
  }
}

// The parsed answer of a response: null for 204, else its JSON; throws for 4xx/5xx.
export async function parse(response) {
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    if (response.ok) throw new ApiError(response.status, "bad_answer", "The server sent an answer the console cannot read.");
  }
  if (!response.ok) throw errorFromBody(response.status, body);
  return body;
}

export async function send(path, options) {
  return parse(await open(path, options));
}
