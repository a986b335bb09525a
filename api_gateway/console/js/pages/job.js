// A job: its definition, its next fire times in its zone, its run history, and what can be done to it.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api } from "../api.js";
import {
  ConfirmButton,
  ErrorBox,
  isFinal,
  Loading,
  Notice,
  PageTitle,
  SkipReason,
  StateBadge,
  StatusBadge,
  Time,
  usePoll,
} from "../components.js";
import { duration, label, RUN_STATUSES, runDuration, zonedTime } from "../format.js";
import { navigate, withQuery } from "../router.js";
import { EXPLAIN } from "./policies.js";

const RUNS_PER_PAGE = 50;

function Definition({ job }) {
  const policy = job.retryPolicy || {};
  const recurring = job.jobType === "JOB_TYPE_RECURRING";
  const rows = [
    ["Type", label(job.jobType)],
    recurring
      ? ["Schedule", html`${job.scheduleDescription} <code>${job.cronExpr}</code>`]
      : ["Runs at", html`<${Time} value=${job.scheduledAt} />`],
    ["Time zone", job.timezone],
    recurring ? ["Next fire", html`<${Time} value=${job.nextFireTime} />`] : null,
    ["Queue", job.queue],
    ["Timeout", `${job.timeoutSeconds} s`],
    [
      "Retries",
      Number(policy.maxAttempts) > 1
        ? `up to ${policy.maxAttempts} attempts, ${label(policy.strategy).toLowerCase()}: first delay ${policy.initialDelaySeconds} s, at most ${policy.maxDelaySeconds} s${policy.strategy === "RETRY_STRATEGY_EXPONENTIAL_BACKOFF" ? `, ×${policy.multiplier}` : ""}`
        : "none (1 attempt)",
    ],
    ["Misfires", html`${label(job.misfirePolicy)} <span class="muted">— ${EXPLAIN.misfirePolicy[job.misfirePolicy]}</span>`],
    ["Overlap", html`${label(job.overlapPolicy)} <span class="muted">— ${EXPLAIN.overlapPolicy[job.overlapPolicy]}</span>`],
    ["Max lateness", Number(job.maxLatenessSeconds) ? `${job.maxLatenessSeconds} s` : "no limit"],
    ["Network", html`${label(job.network)} <span class="muted">— ${EXPLAIN.network[job.network]}</span>`],
    ["Version", job.version],
    ["Created", html`<${Time} value=${job.createTime} />`],
    ["Updated", html`<${Time} value=${job.updateTime} />`],
    ["Id", html`<code>${job.id}</code>`],
  ].filter(Boolean);
  return html`<dl class="definition">
    ${rows.map(([term, value]) => html`<div><dt>${term}</dt><dd>${value}</dd></div>`)}
  </dl>
  <details class="script" open>
    <summary>Script</summary>
    <pre class="code"><code>${job.scriptContent}</code></pre>
  </details>`;
}

function NextFires({ job }) {
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState(null);
  const recurring = job.jobType === "JOB_TYPE_RECURRING";
  usePoll(
    async (signal) => {
      if (!recurring) return;
      try {
        const url = withQuery("/api/schedule/preview", { cronExpr: job.cronExpr, timezone: job.timezone, count: 10 });
        setPreview(await api.get(url, { signal }));
      } catch (err) {
        if (err.name !== "AbortError") setError(err);
      }
    },
    60000,
    [job.cronExpr, job.timezone],
  );
  if (!recurring) return null;
  return html`<section aria-labelledby="next-title">
    <h2 id="next-title">Next 10 fire times <span class="muted">(in ${job.timezone})</span></h2>
    ${job.state !== "JOB_STATE_ACTIVE"
      ? html`<p class="muted">The job is ${label(job.state).toLowerCase()}: these are the slots of its schedule, which it does not fire while so.</p>`
      : ""}
    <${ErrorBox} error=${error} />
    ${preview
      ? html`<ol class="fires">
          ${preview.fireTimes.map(
            (f) => html`<li>
              <time datetime=${f.time} title=${`Your time: ${new Date(f.time).toLocaleString()}`}>${zonedTime(f.time, job.timezone)}</time>
              ${f.dstTransition ? html` <span class="badge dst" title=${f.note}>DST</span>` : ""}
              ${f.note ? html` <span class="muted small">${f.note}</span>` : ""}
            </li>`,
          )}
        </ol>`
      : html`<${Loading} />`}
  </section>`;
}

/** Attempts grouped by the slot they serve (newest first, as listed by the API). */
function groupBySlot(runs) {
  const groups = [];
  for (const run of runs) {
    const last = groups[groups.length - 1];
    if (last && last.scheduledAt === run.scheduledAt) {
      last.runs.push(run);
      if (run.attempt === 1) last.trigger = run.trigger; // the slot's own trigger, not its retries'
    } else {
      groups.push({ scheduledAt: run.scheduledAt, trigger: run.trigger, runs: [run] });
    }
  }
  return groups;
}

function RunHistory({ job, query }) {
  const status = query.get("status") || "";
  const page = Math.max(1, Number.parseInt(query.get("runsPage") || "1", 10) || 1);
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [now, setNow] = useState(Date.now());
  const url = withQuery(`/api/jobs/${job.id}/runs`, { page, pageSize: RUNS_PER_PAGE, status });
  usePoll(
    async (signal) => {
      try {
        setData(await api.get(url, { signal }));
        setNow(Date.now());
        setError(null);
      } catch (err) {
        if (err.name !== "AbortError") setError(err);
      }
    },
    4000,
    [url],
  );
  const here = (changes) => withQuery(`/jobs/${job.id}`, { status, runsPage: page > 1 ? page : "", ...changes });
  return html`<section aria-labelledby="runs-title">
    <h2 id="runs-title">Run history</h2>
    <div class="filters">
      <div class="field">
        <label for="run-status">Status</label>
        <select id="run-status" value=${status} onChange=${(e) => navigate(here({ status: e.currentTarget.value, runsPage: "" }))}>
          <option value="">Any</option>
          ${RUN_STATUSES.map((s) => html`<option value=${s.replace("RUN_STATUS_", "")}>${label(s)}</option>`)}
        </select>
      </div>
    </div>
    <${ErrorBox} error=${error} />
    ${!data
      ? html`<${Loading} />`
      : !data.runs.length
        ? html`<p class="empty">No runs${status ? " with this status" : " yet"}.</p>`
        : html`<div class="table-wrap"><table class="runs responsive">
            <thead><tr>
              <th scope="col">Attempt</th><th scope="col">Status</th><th scope="col">Started</th>
              <th scope="col">Finished</th><th scope="col">Duration</th><th scope="col">Exit code</th>
              <th scope="col">Worker</th><th scope="col">Error or reason</th>
            </tr></thead>
            ${groupBySlot(data.runs).map(
              (group) => html`<tbody class="slot">
                <tr class="slot-head"><th colspan="8" scope="rowgroup">
                  Slot <${Time} value=${group.scheduledAt} /> · ${label(group.trigger)}
                  ${group.runs.length > 1 ? html` · ${group.runs.length} attempts` : ""}
                </th></tr>
                ${group.runs.map(
                  (run) => html`<tr key=${run.id} class=${run.status === "RUN_STATUS_SKIPPED" ? "skipped" : ""}>
                    <td data-label="Attempt"><a href=${`/jobs/${job.id}/runs/${run.id}`}>#${run.attempt} · ${label(run.trigger)}</a></td>
                    <td data-label="Status"><${StatusBadge} status=${run.status} /></td>
                    <td data-label="Started"><${Time} value=${run.startedAt} /></td>
                    <td data-label="Finished"><${Time} value=${run.finishedAt} /></td>
                    <td data-label="Duration">${runDuration(run, now) === null ? "—" : duration(runDuration(run, now))}</td>
                    <td data-label="Exit code">${isFinal(run) && run.status !== "RUN_STATUS_SKIPPED" ? run.exitCode : "—"}</td>
                    <td data-label="Worker" class="mono small">${run.workerId || "—"}</td>
                    <td data-label="Error or reason">${run.status === "RUN_STATUS_SKIPPED"
                      ? html`<${SkipReason} reason=${run.skipReason} />`
                      : html`<span class="error-text">${run.error}</span>`}</td>
                  </tr>`,
                )}
              </tbody>`,
            )}
          </table></div>
          <nav class="pager" aria-label="Run pages">
            <span>Page ${page}</span>
            ${page > 1 ? html`<a href=${here({ runsPage: page - 1 > 1 ? page - 1 : "" })} rel="prev">Newer</a>` : ""}
            ${data.nextPageToken ? html`<a href=${here({ runsPage: page + 1 })} rel="next">Older</a>` : ""}
          </nav>`}
  </section>`;
}

function Actions({ job, setJob, setError, setNotice }) {
  const act = async (verb, call) => {
    setError(null);
    try {
      const result = await call();
      setNotice(`${verb}.`);
      return result;
    } catch (err) {
      setError(err);
      return null;
    }
  };
  const writable = job.state !== "JOB_STATE_DELETED";
  if (!writable) return null;
  return html`<div class="actions" role="group" aria-label="Job actions">
    ${job.state === "JOB_STATE_ACTIVE"
      ? html`<button type="button" onClick=${async () => {
          const updated = await act("Paused", () => api.patch(`/api/jobs/${job.id}/pause`));
          if (updated) setJob(updated);
        }}>Pause</button>`
      : ""}
    ${job.state === "JOB_STATE_PAUSED"
      ? html`<button type="button" onClick=${async () => {
          const updated = await act("Resumed", () => api.patch(`/api/jobs/${job.id}/resume`));
          if (updated) setJob(updated);
        }}>Resume</button>`
      : ""}
    <button type="button" class="primary" onClick=${async () => {
      const run = await act("Run started", () => api.post(`/api/jobs/${job.id}/run`));
      if (run) navigate(`/jobs/${job.id}/runs/${run.id}`);
    }}>Run now</button>
    ${job.state !== "JOB_STATE_COMPLETED" ? html`<a class="button" href=${`/jobs/${job.id}/edit`}>Edit</a>` : ""}
    <${ConfirmButton} label="Delete" danger title="Delete this job?"
      message=${`“${job.name || job.id}” stops firing and disappears from the job list. Its run history is kept.`}
      onConfirm=${async () => {
        const deleted = await act("Deleted", () => api.del(`/api/jobs/${job.id}`));
        if (deleted) navigate("/jobs");
      }} />
  </div>`;
}

export function JobPage({ params, query, role }) {
  const [job, setJob] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState("");
  usePoll(
    async (signal) => {
      try {
        setJob(await api.get(`/api/jobs/${params.jobId}`, { signal }));
      } catch (err) {
        if (err.name !== "AbortError") setError(err);
      }
    },
    15000,
    [params.jobId],
  );
  if (!job) {
    return html`<${PageTitle}>Job<//>${error ? html`<${ErrorBox} error=${error} />` : html`<${Loading} />`}`;
  }
  return html`<p class="crumbs"><a href="/jobs">Jobs</a> /</p>
    <div class="page-head">
      <${PageTitle} title=${job.name || "Job"}>${job.name || "(unnamed job)"} <${StateBadge} state=${job.state} /><//>
      ${role && role !== "ROLE_VIEWER" ? html`<${Actions} job=${job} setJob=${setJob} setError=${setError} setNotice=${setNotice} />` : ""}
    </div>
    <${Notice} message=${notice} />
    <${ErrorBox} error=${error} />
    <div class="columns">
      <section aria-labelledby="def-title">
        <h2 id="def-title">Definition</h2>
        <${Definition} job=${job} />
      </section>
      <${NextFires} job=${job} />
    </div>
    <${RunHistory} job=${job} query=${query} />`;
}
