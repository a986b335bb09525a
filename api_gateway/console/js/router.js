// Routing by path with the History API: every page and every filter is in the URL, so a
// reload or a shared link opens the same view. The gateway answers each route with the
// console's page (api_gateway/console.py PAGES).
import { useEffect, useState } from "preact/hooks";

const listeners = new Set();

function snapshot() {
  return {
    path: location.pathname,
    query: new URLSearchParams(location.search),
    href: location.pathname + location.search,
  };
}

export function navigate(url, { replace = false } = {}) {
  if (url === location.pathname + location.search && !replace) return;
  history[replace ? "replaceState" : "pushState"](null, "", url);
  for (const listener of listeners) listener();
}

window.addEventListener("popstate", () => {
  for (const listener of listeners) listener();
});

// Same-origin links to console pages navigate without reloading.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest && event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download") || link.origin !== location.origin) return;
  if (/^\/(api|swagger|console|openapi\.json)(\/|$)/.test(link.pathname)) return;
  event.preventDefault();
  navigate(link.pathname + link.search);
});

export function useLocation() {
  const [location_, setLocation] = useState(snapshot);
  useEffect(() => {
    const update = () => setLocation(snapshot());
    listeners.add(update);
    return () => listeners.delete(update);
  }, []);
  return location_;
}

/** The first route whose pattern (":name" segments are parameters) matches ``path``. */
export function match(routes, path) {
  const parts = path.replace(/\/+$/, "").split("/");
  for (const route of routes) {
    const pattern = route.path.replace(/\/+$/, "").split("/");
    if (pattern.length !== parts.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < pattern.length; i += 1) {
      if (pattern[i].startsWith(":")) params[pattern[i].slice(1)] = decodeURIComponent(parts[i]);
      else if (pattern[i] !== parts[i]) ok = false;
    }
    if (ok) return { route, params };
  }
  return null;
}

/** ``path`` with ``query`` (a plain object; empty values left out). */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}
