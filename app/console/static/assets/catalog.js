// The catalog's vocabulary as the console shows it (the API's enums in /openapi.json).
export const PROVIDERS = [["local", "Local"], ["openai", "OpenAI"], ["anthropic", "Anthropic"]];
export const CAPABILITIES = ["coding", "reasoning", "long-context", "vision", "writing", "translation", "fast", "cheap"];

export const modelPath = (id) => `/console/models/${id.split("/").map(encodeURIComponent).join("/")}`;
