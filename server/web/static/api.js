// The REST API as the pages use it: JSON in and out, the CSRF header on writes.

const ROOT = document.body.dataset.root || "";
const CSRF = document.body.dataset.csrf || "";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail; // a 422's field errors stay a list
  }
}

export function apiUrl(path, params = {}) {
  const url = new URL(`${ROOT}/api/v1${path}`, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  return url;
}

export function pageUrl(path) {
  return `${ROOT}${path}`;
}

async function answer(response) {
  if (response.ok) return response.json();
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch {
    // not JSON: keep the status text
  }
  throw new ApiError(response.status, detail);
}

export async function getJSON(path, params, signal) {
  const response = await fetch(apiUrl(path, params), {
    headers: { Accept: "application/json" },
    signal,
  });
  return answer(response);
}

function writeHeaders() {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (CSRF) headers["X-CSRF-Token"] = CSRF;
  return headers;
}

export async function postJSON(path, body) {
  const response = await fetch(apiUrl(path), {
    method: "POST",
    headers: writeHeaders(),
    body: JSON.stringify(body ?? {}),
  });
  return answer(response);
}

export async function patchJSON(path, body) {
  const response = await fetch(apiUrl(path), {
    method: "PATCH",
    headers: writeHeaders(),
    body: JSON.stringify(body ?? {}),
  });
  return answer(response);
}

export async function deleteJSON(path) {
  return answer(await fetch(apiUrl(path), { method: "DELETE", headers: writeHeaders() }));
}

/** A metric key as URL path segments ("batch/loss" stays two segments). */
export function metricPath(runId, key) {
  return `/runs/${runId}/metrics/${key.split("/").map(encodeURIComponent).join("/")}`;
}

/** A value as the API sends it (a number, or "NaN" / "Infinity" / "-Infinity") as a number. */
export function toNumber(value) {
  if (typeof value === "number") return value;
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  return NaN;
}
