import { get } from "./api.js";
import { h } from "./ui.js";

// The catalog's vocabulary as the console shows it (the API's enums in /openapi.json).
export const PROVIDERS = [["local", "Local"], ["openai", "OpenAI"], ["anthropic", "Anthropic"]];
export const CAPABILITIES = ["coding", "reasoning", "long-context", "vision", "writing", "translation", "fast", "cheap"];

export const modelPath = (id) => `/console/models/${id.split("/").map(encodeURIComponent).join("/")}`;

// Whether the signed-in user can call a model now (GET /models/access), in words.
const ACCESS_WORDS = {
  own_key: ["Ready: your key", "Calls use the key you stored, plus the service's fee."],
  house_key: ["Ready: service key", "Calls use the service's own key, at the catalog price."],
  local: ["Ready: no key needed", "A built-in model: it answers offline."],
  needs_key: ["Needs a key", "Add a key for its provider on Provider keys first."],
};

export async function accessByModel(signal) {
  const { access } = await get("/api/v1/models/access", signal);
  return new Map(access.map((item) => [item.model_id, item]));
}

export const accessWords = (access) => ACCESS_WORDS[access?.via]?.[0] ?? "";

export function accessMark(access) {
  if (!access) return "";
  const [words, explanation] = ACCESS_WORDS[access.via];
  return h("span", { class: `access access-${access.callable ? "callable" : "needs_key"}`, title: explanation,
                     "data-access": access.via }, words);
}
