// Shared by the dashboard and the playground: the access token and the
// API calls that carry it. Plain ES module, served as /static/api.js.

const TOKEN_KEY = "kiln.token";

/**
 * The access token: taken from a `#token=...` fragment (then removed from
 * the address bar), else from sessionStorage; "" on an open cluster.
 */
export function readToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl !== null) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(
      null,
      "",
      location.pathname + location.search + (rest ? `#${rest}` : ""),
    );
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

/** Keeps `token` for the rest of the session ("" forgets it). */
export function saveToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** `path` with `?access_token=` added when there is a token (EventSource, WebSocket). */
export function withToken(path, token = readToken()) {
  if (!token) return path;
  const url = new URL(path, location.href);
  url.searchParams.set("access_token", token);
  return url.pathname + url.search;
}

/** A WebSocket URL on this same origin. */
export function socketUrl(path, token = readToken()) {
  const url = new URL(withToken(path, token), location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** An HTTP error from the API, with its status. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** Calls the API with the bearer token and parses its JSON answer. */
export async function api(path, init = {}) {
  const token = readToken();
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.body !== undefined) headers.set("Content-Type", "application/json");
  const response = await fetch(path, { ...init, headers });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { message: text };
  }
  if (!response.ok) {
    const message = body?.message ?? body?.error ?? response.statusText;
    throw new ApiError(response.status, `${response.status}: ${message}`);
  }
  return body;
}

/**
 * Wires a token form (an input and a submit) to sessionStorage; calls
 * `onChange` with the new token when the user saves one.
 */
export function bindTokenForm(form, onChange) {
  const input = form.querySelector("input");
  input.value = readToken();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveToken(input.value.trim());
    onChange(input.value.trim());
  });
}

/** Milliseconds as a short duration: 850 ms, 1.24 s, 2 min 5 s. */
export function formatMs(ms) {
  if (ms === undefined || ms === null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Kilobytes as a short size. */
export function formatKb(kb) {
  if (kb === undefined || kb === null) return "–";
  if (kb < 1024) return `${kb} KiB`;
  return `${(kb / 1024).toFixed(1)} MiB`;
}

/** Creates an element with attributes and children (strings become text). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Splits an argument line on spaces, keeping quoted parts together. */
export function splitArgs(line) {
  const args = [];
  for (const match of line.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)) {
    args.push(match[1]?.replace(/\\(.)/g, "$1") ?? match[2] ?? match[3]);
  }
  return args;
}
