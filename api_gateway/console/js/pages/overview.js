// Overview: the mesh's health with its reasons, live figures, the last 24 h of runs, runs executing now.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api, health as fetchHealth } from "../api.js";
import { ErrorBox, PageTitle, Time, usePoll } from "../components.js";
import { duration, label, parseTime, RUN_STATUSES, seconds, shortId, slug } from "../format.js";

const HEALTH_TEXT = {
  HEALTH_STATUS_SERVING: "Serving",
  HEALTH_STATUS_DEGRADED: "Degraded",
  HEALTH_STATUS_NOT_SERVING: "Not serving",
};

function HealthPanel({ health, error }) {
  if (!health) {
    return html`<section class="health health-not-serving" aria-labelledby="health-title">
      <h2 id="health-title">Health: unknown</h2>
      <p>${error ? `The monitor did not answer: ${error.message}` : "Checking…"}</p>
    </section>`;
  }
  const problems = (health.components || []).filter((c) => c.status !== "HEALTH_STATUS_SERVING");
  return html`<section class=${`health health-${slug(health.status)}`} aria-labelledby="health-title">
    <h2 id="health-title">Health: <span class="health-word">${HEALTH_TEXT[health.status] || label(health.status)}</span></h2>
    ${problems.length
      ? html`<ul class="reasons">
          ${problems.map((c) => html`<li><strong>${c.name}</strong> (${label(c.status)}): ${c.detail}</li>`)}
        </ul>`
      : html`<p>Database, Redis, schedulers and workers all answer.</p>`}
    <details>
      <summary>Every component (checked <${Time} value=${health.checkTime} />)</summary>
      <table class="compact">
        <thead><tr><th scope="col">Component</th><th scope="col">Status</th><th scope="col">Detail</th></tr></thead>
        <tbody>
          ${(health.components || []).map(
            (c) => html`<tr><td>${c.name}</td><td>${label(c.status)}</td><td>${c.detail}</td></tr>`,
          )}
        </tbody>
      </table>
    </details>
  </section>`;
}

function Tile({ name, value, note }) {
  return html`<div class="tile">
    <p class="tile-name">${name}</p>
    <p class="tile-value">${value}</p>
    ${note ? html`<p class="tile-note">${note}</p>` : ""}
  </div>`;
}

/** Runs of the last 24 h by status: a horizontal bar chart, with the figures as a table for screen readers. */
function RunsChart({ counts }) {
  const rows = RUN_STATUSES.map((status) => [status, Number(counts[status.replace("RUN_STATUS_", "")] || 0)]);
  const max = Math.max(1, ...rows.map(([, n]) => n));
  const barHeight = 22;
  const labelWidth = 90;
  const width = 480;
  return html`<figure class="chart">
    <svg viewBox=${`0 0 ${width} ${rows.length * (barHeight + 6)}`} role="img"
      aria-label="Runs scheduled in the last 24 hours, by status">
      ${rows.map(([status, n], i) => {
        const y = i * (barHeight + 6);
        const w = n ? Math.max(2, ((width - labelWidth - 60) * n) / max) : 0;
        return html`<g key=${status}>
          <text x="0" y=${y + barHeight * 0.7} class="chart-label">${label(status)}</text>
          <rect x=${labelWidth} y=${y} width=${w} height=${barHeight} rx="3" class=${`bar st-${slug(status)}`} />
          <text x=${labelWidth + w + 6} y=${y + barHeight * 0.7} class="chart-value">${n}</text>
        </g>`;
      })}
    </svg>
    <figcaption>Runs scheduled within the last 24 hours (and due within the next), by status.</figcaption>
    <table class="visually-hidden">
      <caption>Runs in the last 24 hours by status</caption>
      <tbody>${rows.map(([status, n]) => html`<tr><th scope="row">${label(status)}</th><td>${n}</td></tr>`)}</tbody>
    </table>
  </figure>`;
}

function Queues({ depths }) {
  const entries = Object.entries(depths || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return html`<p class="muted">No queue has been used yet.</p>`;
  const max = Math.max(1, ...entries.map(([, n]) => Number(n)));
  return html`<table class="compact">
    <thead><tr><th scope="col">Queue</th><th scope="col">Waiting</th><th scope="col"><span class="visually-hidden">Share</span></th></tr></thead>
    <tbody>
      ${entries.map(
        ([name, n]) => html`<tr key=${name}>
          <td><a href=${`/jobs?queue=${encodeURIComponent(name)}`}>${name}</a></td>
          <td class="num">${Number(n)}</td>
          <td class="meter-cell"><meter min="0" max=${max} value=${Number(n)} aria-label=${`${name}: ${n} waiting`}></meter></td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

function Running({ running, now }) {
  if (!running) return null;
  if (!running.runs || !running.runs.length) return html`<p class="muted">No run is executing now.</p>`;
  return html`<table class="responsive">
    <thead><tr>
      <th scope="col">Run</th><th scope="col">Job</th><th scope="col">Started</th>
      <th scope="col">Running for</th><th scope="col">Attempt</th><th scope="col">Worker</th>
    </tr></thead>
    <tbody>
      ${running.runs.map(
        (run) => html`<tr key=${run.id}>
          <td data-label="Run"><a href=${`/jobs/${run.jobId}/runs/${run.id}`}>${shortId(run.id)}</a></td>
          <td data-label="Job"><a href=${`/jobs/${run.jobId}`}>${(running.jobNames || {})[run.jobId] || shortId(run.jobId)}</a></td>
          <td data-label="Started"><${Time} value=${run.startedAt} /></td>
          <td data-label="Running for">${duration(now - (parseTime(run.startedAt) || new Date(now)).getTime())}</td>
          <td data-label="Attempt">${run.attempt}</td>
          <td data-label="Worker" class="mono">${run.workerId}</td>
        </tr>`,
      )}
    </tbody>
  </table>
  ${Number(running.totalSize) > running.runs.length
    ? html`<p class="muted">and ${Number(running.totalSize) - running.runs.length} more.</p>`
    : ""}`;
}

export function Overview() {
  const [health, setHealth] = useState(null);
  const [healthError, setHealthError] = useState(null);
  const [metrics, setMetrics] = useState(null);
  const [running, setRunning] = useState(null);
  const [error, setError] = useState(null);
  const [now, setNow] = useState(Date.now());
  usePoll(
    async (signal) => {
      const [h, m, r] = await Promise.allSettled([
        fetchHealth({ signal }),
        api.get("/api/health/metrics", { signal }),
        api.get("/api/runs/running?pageSize=20", { signal }),
      ]);
      if (signal.aborted) return;
      setNow(Date.now());
      if (h.status === "fulfilled") {
        setHealth(h.value);
        setHealthError(null);
      } else {
        setHealth(null);
        setHealthError(h.reason);
      }
      if (m.status === "fulfilled") setMetrics(m.value);
      if (r.status === "fulfilled") setRunning(r.value);
      const failed = [m, r].find((x) => x.status === "rejected");
      setError(failed ? failed.reason : null);
    },
    5000,
    [],
  );
  const runsNow = running ? Number(running.totalSize) : null;
  return html`<${PageTitle}>Overview<//>
    <${HealthPanel} health=${health} error=${healthError} />
    <${ErrorBox} error=${error} />
    ${metrics
      ? html`<section class="tiles" aria-label="Figures">
          <${Tile} name="Workers alive" value=${metrics.workersAlive} />
          <${Tile} name="Schedulers alive" value=${metrics.schedulersAlive} />
          <${Tile} name="Runs running now" value=${runsNow === null ? "—" : runsNow} />
          <${Tile} name="Lateness p50" value=${seconds(metrics.latenessP50Seconds)}
            note=${`${Number(metrics.latenessSampleSize)} runs, last 24 h`} />
          <${Tile} name="Lateness p99" value=${seconds(metrics.latenessP99Seconds)} note="start minus due time" />
          <${Tile} name="Oldest pending" value=${seconds(metrics.oldestPendingAgeSeconds)}
            note=${`${Number(metrics.runsLastHour)} runs ended in the last hour`} />
        </section>
        <div class="columns">
          <section aria-labelledby="chart-title">
            <h2 id="chart-title">Runs, last 24 hours</h2>
            <${RunsChart} counts=${metrics.runsByStatus || {}} />
          </section>
          <section aria-labelledby="queues-title">
            <h2 id="queues-title">Queue depth</h2>
            <${Queues} depths=${metrics.queueDepths} />
          </section>
        </div>`
      : ""}
    <section aria-labelledby="running-title">
      <h2 id="running-title">Running now</h2>
      <${Running} running=${running} now=${now} />
    </section>`;
}
