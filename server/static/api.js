// REST over fetch with the {success, data | error} envelope. Credentials are the
// HttpOnly cookies set at login: this code never sees a token. A 401 is answered by
// one POST /v1/auth/refresh (shared by every request that hit it at the same time)
// and a single retry; if the refresh fails too, listeners hear "unauthorized".

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const authEvents = new EventTarget();
let refreshing = null;

/** Rotates the refresh cookie and the jwt cookie; resolves true when it worked. */
export function refreshSession() {
  if (!refreshing) {
    refreshing = fetch("/v1/auth/refresh", { method: "POST", credentials: "same-origin" })
      .then((response) => response.ok)
      .catch(() => false)
      .finally(() => {
        // Let the next expiry trigger a fresh refresh.
        setTimeout(() => (refreshing = null), 0);
      });
  }
  return refreshing;
}

async function send(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body; // the browser sets the multipart boundary itself
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

async function unwrap(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (response.ok && payload && payload.success) return payload.data;
  const error = (payload && payload.error) || {};
  throw new ApiError(
    response.status,
    error.code || "internal",
    error.message || `request failed with HTTP ${response.status}`,
    error.details || null,
  );
}

export async function api(method, path, body) {
  let response;
  try {
    response = await send(method, path, body);
  } catch (exc) {
    throw new ApiError(0, "unavailable", "the server cannot be reached", String(exc));
  }
  const isAuthCall = path.startsWith("/v1/auth/");
  if (response.status === 401 && !isAuthCall) {
    if (await refreshSession()) {
      response = await send(method, path, body);
    }
    if (response.status === 401) {
      authEvents.dispatchEvent(new Event("unauthorized"));
    }
  }
  return unwrap(response);
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);
