// The console: layout, session and routes.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { api, getSession, onSessionChange, sessionEnded, signOut } from "./api.js";
import { match, navigate, useLocation, withQuery } from "./router.js";
import { label } from "./format.js";
import { SignIn, SignUp } from "./pages/auth.js";
import { Overview } from "./pages/overview.js";
import { Jobs } from "./pages/jobs.js";
import { JobPage } from "./pages/job.js";
import { JobForm } from "./pages/job_form.js";
import { RunPage } from "./pages/run.js";
import { Users } from "./pages/users.js";

const ROUTES = [
  { path: "/", page: Overview },
  { path: "/jobs", page: Jobs },
  { path: "/jobs/new", page: JobForm },
  { path: "/jobs/:jobId", page: JobPage },
  { path: "/jobs/:jobId/edit", page: JobForm },
  { path: "/jobs/:jobId/runs/:runId", page: RunPage },
  { path: "/admin/users", page: Users },
  { path: "/signin", page: SignIn, public: true },
  { path: "/signup", page: SignUp, public: true },
];

function Header({ me, session, path }) {
  const role = (me && me.role) || session.role;
  const current = (prefix) => (prefix === "/" ? path === "/" : path.startsWith(prefix)) ? "page" : undefined;
  return html`<header class="top">
    <a class="brand" href="/">jobmesh</a>
    <nav aria-label="Main">
      <a href="/" aria-current=${current("/")}>Overview</a>
      <a href="/jobs" aria-current=${current("/jobs")}>Jobs</a>
      ${role === "ROLE_ADMIN" ? html`<a href="/admin/users" aria-current=${current("/admin")}>Users</a>` : ""}
      <a href="/swagger">API</a>
    </nav>
    <div class="who">
      <span class="user">${(me && me.username) || session.username || session.email}</span>
      <span class="badge role">${label(role)}</span>
      <button type="button" class="link" onClick=${() => {
        sessionEnded.reason = "";
        signOut();
      }}>Sign out</button>
    </div>
  </header>`;
}

function NotFound() {
  return html`<h1 tabindex="-1">Not found</h1><p>No page here. <a href="/">Back to the overview</a>.</p>`;
}

function App() {
  const location = useLocation();
  const [session, setSession] = useState(getSession());
  const [me, setMe] = useState(null);
  useEffect(() => onSessionChange(setSession), []);
  const userId = session && session.userId;
  useEffect(() => {
    setMe(null);
    if (!userId) return;
    // The role the server applies now (the token's may be older).
    api.get("/api/auth/me").then(setMe, () => {});
  }, [userId]);

  const found = match(ROUTES, location.path);
  const isPublic = found && found.route.public;
  const next = location.query.get("next");

  useEffect(() => {
    if (!session && !isPublic) {
      navigate(withQuery("/signin", { next: location.href === "/" ? "" : location.href }), { replace: true });
    } else if (session && isPublic) {
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", { replace: true });
    }
  }, [session, isPublic, location.href]);

  // Move focus to the new page's heading, so keyboard and screen-reader users start there.
  useEffect(() => {
    const timer = setTimeout(() => {
      const heading = document.querySelector("main h1");
      if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
    }, 0);
    return () => clearTimeout(timer);
  }, [location.path]);

  if (!session && !isPublic) return null;
  if (session && isPublic) return null;
  const Page = found ? found.route.page : NotFound;
  const role = (me && me.role) || (session && session.role) || "";
  const props = { params: found ? found.params : {}, query: location.query, href: location.href, role, me, session };
  if (isPublic) {
    return html`<main id="main" class="narrow"><${Page} ...${props} notice=${sessionEnded.reason} /></main>`;
  }
  return html`<a class="skip" href="#main">Skip to content</a>
    <${Header} me=${me} session=${session} path=${location.path} />
    <main id="main" tabindex="-1"><${Page} key=${location.path} ...${props} /></main>`;
}

render(html`<${App} />`, document.getElementById("app"));
