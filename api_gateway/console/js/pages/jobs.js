// Jobs: filters and search in the URL, paging, each row with its schedule, next fire time and recent runs.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api } from "../api.js";
import { ErrorBox, Loading, PageTitle, RunStrip, StateBadge, StatusBadge, Time, usePoll } from "../components.js";
import { fromNow } from "../format.js";
import { navigate, withQuery } from "../router.js";

const PAGE_SIZE = 20;
const STATES = [
  ["", "Any (not deleted)"],
  ["ACTIVE", "Active"],
  ["PAUSED", "Paused"],
  ["COMPLETED", "Completed"],
  ["DELETED", "Deleted"],
];
const TYPES = [
  ["", "Any"],
  ["RECURRING", "Recurring"],
  ["ONE_TIME", "One-time"],
];

function filtersFrom(query) {
  return {
    state: query.get("state") || "",
    type: query.get("type") || "",
    queue: query.get("queue") || "",
    q: query.get("q") || "",
    page: Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1),
  };
}

function Filters({ filters }) {
  const [queue, setQueue] = useState(filters.queue);
  const [q, setQ] = useState(filters.q);
  const go = (changes) => navigate(withQuery("/jobs", { ...filters, queue, q, ...changes, page: "" }));
  return html`<form class="filters" role="search" aria-label="Filter jobs" onSubmit=${(e) => {
    e.preventDefault();
    go({});
  }}>
    <div class="field">
      <label for="f-q">Name contains</label>
      <input id="f-q" type="search" value=${q} onInput=${(e) => setQ(e.currentTarget.value)} />
    </div>
    <div class="field">
      <label for="f-state">State</label>
      <select id="f-state" value=${filters.state} onChange=${(e) => go({ state: e.currentTarget.value })}>
        ${STATES.map(([value, text]) => html`<option value=${value}>${text}</option>`)}
      </select>
    </div>
    <div class="field">
      <label for="f-type">Type</label>
      <select id="f-type" value=${filters.type} onChange=${(e) => go({ type: e.currentTarget.value })}>
        ${TYPES.map(([value, text]) => html`<option value=${value}>${text}</option>`)}
      </select>
    </div>
    <div class="field">
      <label for="f-queue">Queue</label>
      <input id="f-queue" value=${queue} onInput=${(e) => setQueue(e.currentTarget.value)} placeholder="any" />
    </div>
    <div class="field buttons">
      <button type="submit">Search</button>
      ${filters.q || filters.state || filters.type || filters.queue
        ? html`<a class="button" href="/jobs">Clear</a>`
        : ""}
    </div>
  </form>`;
}

function Schedule({ job }) {
  if (job.jobType === "JOB_TYPE_ONE_TIME") {
    return html`<span>Once, at <${Time} value=${job.scheduledAt} /></span>`;
  }
  return html`<span class="schedule">
    <span>${job.scheduleDescription || "—"}</span>
    <code>${job.cronExpr}</code>
  </span>`;
}

function lastRun(runs) {
  return (runs || []).find((r) => r.status !== "RUN_STATUS_PENDING") || null;
}

function JobRow({ job, runs }) {
  const last = lastRun(runs);
  return html`<tr>
    <td data-label="Name"><a href=${`/jobs/${job.id}`}>${job.name || "(unnamed)"}</a>
      <div class="muted small">${job.queue}</div></td>
    <td data-label="Schedule"><${Schedule} job=${job} /></td>
    <td data-label="Zone">${job.timezone}</td>
    <td data-label="Next fire">${job.nextFireTime
      ? html`<${Time} value=${job.nextFireTime} /><div class="muted small">${fromNow(job.nextFireTime)}</div>`
      : html`<span class="muted">—</span>`}</td>
    <td data-label="Last run">${last
      ? html`<a href=${`/jobs/${job.id}/runs/${last.id}`}><${StatusBadge} status=${last.status} /></a>
          <div class="small"><${Time} value=${last.finishedAt || last.startedAt || last.scheduledAt} /></div>`
      : html`<span class="muted">—</span>`}</td>
    <td data-label="Recent runs"><${RunStrip} jobId=${job.id} runs=${runs} /></td>
    <td data-label="State"><${StateBadge} state=${job.state} /></td>
  </tr>`;
}

export function Jobs({ query, role }) {
  const filters = filtersFrom(query);
  const [page, setPage] = useState(null);
  const [recent, setRecent] = useState({});
  const [error, setError] = useState(null);
  const listUrl = withQuery("/api/jobs", {
    page: filters.page,
    pageSize: PAGE_SIZE,
    state: filters.state,
    jobType: filters.type,
    queue: filters.queue,
    name: filters.q,
  });
  usePoll(
    async (signal) => {
      try {
        const data = await api.get(listUrl, { signal });
        const ids = data.jobs.map((j) => j.id);
        let strips = {};
        if (ids.length) {
          // One request for every row's recent runs (not one per job).
          const batch = await api.get(withQuery("/api/runs/recent", { jobIds: ids.join(","), count: 20 }), { signal });
          strips = Object.fromEntries(batch.jobs.map((j) => [j.jobId, j.runs]));
        }
        setPage(data);
        setRecent(strips);
        setError(null);
      } catch (err) {
        if (err.name !== "AbortError") setError(err);
      }
    },
    10000,
    [listUrl],
  );
  const total = page ? Number(page.totalSize || 0) : 0;
  const first = (filters.page - 1) * PAGE_SIZE + 1;
  const last = page ? first + page.jobs.length - 1 : 0;
  const pageLink = (n) => withQuery("/jobs", { ...filters, page: n > 1 ? n : "" });
  return html`<div class="page-head">
      <${PageTitle}>Jobs<//>
      ${role && role !== "ROLE_VIEWER" ? html`<a class="button primary" href="/jobs/new">New job</a>` : ""}
    </div>
    <${Filters} key=${`${filters.q}|${filters.queue}`} filters=${filters} />
    <${ErrorBox} error=${error} />
    ${!page
      ? html`<${Loading} />`
      : page.jobs.length === 0
        ? html`<p class="empty">No job matches.${role !== "ROLE_VIEWER" ? html` <a href="/jobs/new">Create one</a>.` : ""}</p>`
        : html`<div class="table-wrap"><table class="responsive jobs">
            <caption class="visually-hidden">Jobs ${first} to ${last} of ${total}</caption>
            <thead><tr>
              <th scope="col">Name</th><th scope="col">Schedule</th><th scope="col">Zone</th>
              <th scope="col">Next fire</th><th scope="col">Last run</th><th scope="col">Recent runs</th>
              <th scope="col">State</th>
            </tr></thead>
            <tbody>${page.jobs.map((job) => html`<${JobRow} key=${job.id} job=${job} runs=${recent[job.id]} />`)}</tbody>
          </table></div>
          <nav class="pager" aria-label="Pages">
            <span>${first}–${last} of ${total}</span>
            ${filters.page > 1 ? html`<a href=${pageLink(filters.page - 1)} rel="prev">Previous</a>` : ""}
            ${last < total ? html`<a href=${pageLink(filters.page + 1)} rel="next">Next</a>` : ""}
          </nav>`}`;
}
