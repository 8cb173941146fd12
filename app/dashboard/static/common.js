// Shared by the dashboard's pages: API calls (with the API key when the service wants one), number
// formatting, DOM building, polling, permalinks and downloads.

export const ROOT = document.querySelector('meta[name="api-root"]').content;
const KEY = 'elfscreen-api-key';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { 'X-API-Key': key } : {};
}

// GET an API path (e.g. '/v1/results'); JSON by default. A 401 shows the API-key form.
export async function api(path) {
  const response = await fetch(ROOT + path, { headers: authHeaders() });
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).error.message;
    } catch { /* not an error body */ }
    if (response.status === 401) askForKey();
    throw new ApiError(response.status, message);
  }
  return response.json();
}

function askForKey() {
  const form = document.getElementById('key-form');
  form.hidden = false;
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById('key-input').value.trim());
    location.reload();
  };
}

export function showError(error) {
  const box = document.getElementById('error');
  box.textContent = error ? String(error.message || error) : '';
  box.hidden = !error;
}

// Call `step` now and again every `everyMs` while it resolves to true. Errors are shown; a client
// error (unknown id, no access) stops the polling, anything else (server restarting) is retried.
export function poll(step, everyMs = 2000) {
  const run = async () => {
    let again = true;
    try {
      again = await step();
      showError(null);
    } catch (error) {
      showError(error);
      again = !(error.status >= 400 && error.status < 500);
    }
    if (again) setTimeout(run, everyMs);
  };
  run();
}

export function fmt(value, digits = 3) {
  return value === null || value === undefined || Number.isNaN(value) ? '–' : Number(value).toFixed(digits);
}

// el('a', {href: '…', class: 'x'}, 'text', child…): an HTML element.
export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// The same in the SVG namespace.
export function svgEl(tag, attrs = {}, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined).map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

// A readonly input holding a permalink, and its Copy button.
export function showPermalink(input, button, url) {
  input.value = url;
  button.onclick = async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(url);
    } catch {
      document.execCommand('copy'); // plain http outside localhost has no clipboard API
    }
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  };
}

// Point a download link at an API path; with an API key the file is fetched with it.
export function downloadLink(anchor, path, filename) {
  anchor.href = ROOT + path;
  anchor.setAttribute('download', filename);
  anchor.onclick = async (event) => {
    if (!sessionStorage.getItem(KEY)) return; // the browser downloads it itself
    event.preventDefault();
    const response = await fetch(ROOT + path, { headers: authHeaders() });
    const url = URL.createObjectURL(await response.blob());
    el('a', { href: url, download: filename }).click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  };
}

export function shortId(id) {
  return id.slice(0, 8);
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '–';
}
