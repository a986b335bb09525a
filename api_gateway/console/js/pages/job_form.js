// Create or edit a job: every field of the Job message, the API's field errors next to each field,
// a live preview of the next fire times, and a stale edit (409) that loses nothing.
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "../html.js";
import { api, ApiError } from "../api.js";
import { ErrorBox, Field, Loading, PageTitle, Time } from "../components.js";
import { label, zonedTime } from "../format.js";
import { navigate, withQuery } from "../router.js";
import { EXPLAIN } from "./policies.js";

const DEFAULTS = {
  name: "",
  jobType: "JOB_TYPE_RECURRING",
  cronExpr: "*/5 * * * *",
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  scheduledAt: "",
  scriptContent: 'print("hello from jobmesh")\n',
  timeoutSeconds: "3600",
  "retryPolicy.maxAttempts": "1",
  "retryPolicy.strategy": "RETRY_STRATEGY_EXPONENTIAL_BACKOFF",
  "retryPolicy.initialDelaySeconds": "0",
  "retryPolicy.maxDelaySeconds": "86400",
  "retryPolicy.multiplier": "2",
  misfirePolicy: "MISFIRE_POLICY_RUN_ONCE",
  overlapPolicy: "OVERLAP_POLICY_ALLOW",
  queue: "default",
  maxLatenessSeconds: "0",
  network: "NETWORK_NONE",
};
const NUMBERS = new Set([
  "timeoutSeconds",
  "retryPolicy.maxAttempts",
  "retryPolicy.initialDelaySeconds",
  "retryPolicy.maxDelaySeconds",
  "retryPolicy.multiplier",
  "maxLatenessSeconds",
]);
const FIELD_LABELS = {
  name: "Name",
  cronExpr: "Cron expression",
  timezone: "Time zone",
  scheduledAt: "Runs at",
  scriptContent: "Script",
  timeoutSeconds: "Timeout",
  "retryPolicy.maxAttempts": "Max attempts",
  "retryPolicy.strategy": "Retry strategy",
  "retryPolicy.initialDelaySeconds": "Initial delay",
  "retryPolicy.maxDelaySeconds": "Max delay",
  "retryPolicy.multiplier": "Multiplier",
  misfirePolicy: "Misfire policy",
  overlapPolicy: "Overlap policy",
  queue: "Queue",
  maxLatenessSeconds: "Max lateness",
  network: "Network",
};
const ZONES = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : ["UTC"];

/** "2026-12-01T02:30:00Z" → "2026-12-01T03:30" (a datetime-local value in the viewer's zone). */
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function fromJob(job) {
  const policy = job.retryPolicy || {};
  return {
    name: job.name,
    jobType: job.jobType,
    cronExpr: job.cronExpr,
    timezone: job.timezone,
    scheduledAt: toLocalInput(job.scheduledAt),
    scriptContent: job.scriptContent,
    timeoutSeconds: String(job.timeoutSeconds),
    "retryPolicy.maxAttempts": String(policy.maxAttempts),
    "retryPolicy.strategy": policy.strategy,
    "retryPolicy.initialDelaySeconds": String(policy.initialDelaySeconds),
    "retryPolicy.maxDelaySeconds": String(policy.maxDelaySeconds),
    "retryPolicy.multiplier": String(policy.multiplier),
    misfirePolicy: job.misfirePolicy,
    overlapPolicy: job.overlapPolicy,
    queue: job.queue,
    maxLatenessSeconds: String(job.maxLatenessSeconds),
    network: job.network,
  };
}

function fieldValue(key, raw) {
  if (key === "scheduledAt") return raw ? new Date(raw).toISOString() : "";
  if (NUMBERS.has(key)) return raw === "" ? raw : Number(raw);
  return raw;
}

/** The REST body for ``keys`` of ``values`` (dotted keys nest). */
function body(values, keys) {
  const out = {};
  for (const key of keys) {
    const value = fieldValue(key, values[key]);
    if (value === "" && (NUMBERS.has(key) || key === "scheduledAt")) continue;
    const [head, sub] = key.split(".");
    if (sub) out[head] = { ...(out[head] || {}), [sub]: value };
    else out[head] = value;
  }
  return out;
}

const EXPONENTIAL = "RETRY_STRATEGY_EXPONENTIAL_BACKOFF";

/** The fields that apply: a cron expression or a time, and a multiplier only for exponential backoff. */
function relevantKeys(values) {
  return Object.keys(DEFAULTS).filter((key) => {
    if (key === "cronExpr") return values.jobType !== "JOB_TYPE_ONE_TIME";
    if (key === "scheduledAt") return values.jobType === "JOB_TYPE_ONE_TIME";
    if (key === "retryPolicy.multiplier") return values["retryPolicy.strategy"] === EXPONENTIAL;
    return true;
  });
}

/** "job.retry_policy.max_attempts" (gRPC path) or "retryPolicy.maxAttempts" (JSON) → the form's key. */
function formKey(field) {
  return String(field)
    .replace(/^job\./, "")
    .replace(/\[\d+\]/g, "")
    .split(".")
    .map((part) => part.replace(/_([a-z])/g, (_, c) => c.toUpperCase()))
    .join(".");
}

function violations(error) {
  const byField = {};
  const other = [];
  if (error instanceof ApiError) {
    for (const v of error.violations) {
      const key = formKey(v.field);
      if (key in DEFAULTS) byField[key] = byField[key] ? `${byField[key]}; ${v.description}` : v.description;
      else other.push(v);
    }
  }
  return { byField, other };
}

/** The next fire times as the cron expression and zone are typed (debounced; stale answers dropped). */
function usePreview(cronExpr, timezone, enabled) {
  const [state, setState] = useState({ preview: null, error: null, busy: false });
  useEffect(() => {
    if (!enabled || !cronExpr.trim()) {
      setState({ preview: null, error: null, busy: false });
      return undefined;
    }
    const controller = new AbortController();
    setState((s) => ({ ...s, busy: true }));
    const timer = setTimeout(async () => {
      try {
        const url = withQuery("/api/schedule/preview", { cronExpr, timezone, count: 5 });
        const preview = await api.get(url, { signal: controller.signal });
        setState({ preview, error: null, busy: false });
      } catch (err) {
        if (err.name !== "AbortError") setState({ preview: null, error: err, busy: false });
      }
    }, 300);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [cronExpr, timezone, enabled]);
  return state;
}

function Preview({ state, timezone }) {
  if (state.error) return null; // shown at its field
  if (!state.preview) return html`<p class="muted" aria-live="polite">${state.busy ? "Computing…" : ""}</p>`;
  return html`<div class="preview" aria-live="polite" aria-label="Schedule preview">
    <p><strong>${state.preview.description}</strong></p>
    <p class="muted small">Next fire times in ${timezone || "UTC"}:</p>
    <ol class="fires">
      ${state.preview.fireTimes.map(
        (f) => html`<li><${Time} value=${f.time}>${zonedTime(f.time, timezone)}<//>
          ${f.note ? html` <span class="muted small">${f.note}</span>` : ""}</li>`,
      )}
    </ol>
  </div>`;
}

/** The fields the user changed: ``values`` against the job as read (``original``). */
function edited(values, original) {
  return Object.keys(DEFAULTS).filter((key) => String(values[key]) !== String(original[key]));
}

/** The fields another edit changed, as "label: before → after" (and whether the user changed it too). */
function changedOnServer(original, latest, mine) {
  return Object.keys(DEFAULTS)
    .filter((key) => String(original[key]) !== String(latest[key]))
    .map((key) => ({
      key,
      label: FIELD_LABELS[key] || key,
      before: original[key],
      after: latest[key],
      clash: mine.includes(key),
    }));
}

function StaleBanner({ stale, onKeepMine, onTakeTheirs }) {
  return html`<div class="alert warning" role="alert" id="stale">
    <h2>This job was changed since you opened it</h2>
    <p>You edited version ${stale.yours}; it is now at version ${stale.latest.version}. Nothing was saved, and your
      changes are still in the form. Keep them on top of the latest version (then save again), or reload it.</p>
    ${stale.changes.length
      ? html`<p>Changed meanwhile:</p>
          <ul>${stale.changes.map(
            (c) => html`<li><strong>${c.label}</strong>: <code>${String(c.before)}</code> → <code>${String(c.after)}</code>
              ${c.clash ? html` <em>(you changed it too: yours is kept if you keep your changes)</em>` : ""}</li>`,
          )}</ul>`
      : html`<p>No field you can edit differs (its state or schedule cursor moved).</p>`}
    <div class="actions">
      <button type="button" class="primary" onClick=${onKeepMine}>Keep my changes on the latest version</button>
      <button type="button" onClick=${onTakeTheirs}>Reload the latest version (drop my changes)</button>
    </div>
  </div>`;
}

function Select({ attrs, value, options, onChange }) {
  return html`<select ...${attrs} value=${value} onChange=${(e) => onChange(e.currentTarget.value)}>
    ${options.map((o) => html`<option value=${o}>${label(o)}</option>`)}
  </select>`;
}

export function JobForm({ params, role }) {
  const editing = Boolean(params.jobId);
  const [base, setBase] = useState(null); // the job as last read (edit)
  const [values, setValues] = useState(editing ? null : { ...DEFAULTS, scheduledAt: toLocalInput(new Date(Date.now() + 60000).toISOString()) });
  const [error, setError] = useState(null);
  const [fieldErrors, setFieldErrors] = useState({}); // the last save's, until the field is changed
  const [loadError, setLoadError] = useState(null);
  const [stale, setStale] = useState(null);
  const [busy, setBusy] = useState(false);
  const form = useRef(null);

  useEffect(() => {
    if (!editing) return;
    api.get(`/api/jobs/${params.jobId}`).then(
      (job) => {
        setBase(job);
        setValues(fromJob(job));
      },
      setLoadError,
    );
  }, [params.jobId]);

  const recurring = values && values.jobType === "JOB_TYPE_RECURRING";
  const preview = usePreview(values ? values.cronExpr : "", values ? values.timezone : "", Boolean(recurring));
  if (role === "ROLE_VIEWER") {
    return html`<${PageTitle}>${editing ? "Edit job" : "New job"}<//><p>Viewers cannot create or change jobs.</p>`;
  }
  if (loadError) return html`<${PageTitle}>Edit job<//><${ErrorBox} error=${loadError} />`;
  if (!values) return html`<${PageTitle}>Edit job<//><${Loading} />`;

  const { byField, other } = violations(error);
  const previewErrors = violations(preview.error).byField;
  const errorFor = (key) => fieldErrors[key] || (key === "cronExpr" || key === "timezone" ? previewErrors[key] : "");
  const set = (key) => (value) => {
    setValues((v) => ({ ...v, [key]: value }));
    if (fieldErrors[key]) setFieldErrors((errors) => ({ ...errors, [key]: "" }));
  };
  const input = (key, extra = {}) => (attrs) =>
    html`<input ...${attrs} name=${key} value=${values[key]} onInput=${(e) => set(key)(e.currentTarget.value)} ...${extra} />`;

  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setFieldErrors({});
    try {
      if (editing) {
        const original = fromJob(base);
        const keys = relevantKeys(values).filter((k) => String(values[k]) !== String(original[k]));
        if (!keys.length) {
          navigate(`/jobs/${base.id}`);
          return;
        }
        const saved = await api.put(`/api/jobs/${base.id}`, { ...body(values, keys), version: base.version });
        navigate(`/jobs/${saved.id}`);
      } else {
        const created = await api.post("/api/jobs", body(values, relevantKeys(values)));
        navigate(`/jobs/${created.id}`);
      }
    } catch (err) {
      setBusy(false);
      if (editing && err instanceof ApiError && err.status === 409) {
        const latest = await api.get(`/api/jobs/${base.id}`).catch(() => null);
        if (latest) {
          const original = fromJob(base);
          const mine = edited(values, original);
          setStale({ yours: base.version, latest, mine, changes: changedOnServer(original, fromJob(latest), mine) });
          setTimeout(() => document.getElementById("stale")?.scrollIntoView({ block: "center" }), 0);
          return;
        }
      }
      setError(err);
      setFieldErrors(violations(err).byField);
      setTimeout(() => {
        const first = form.current && form.current.querySelector("[aria-invalid=true]");
        if (first) first.focus();
      }, 0);
    }
  };

  const field = (key, hint, control, wide) => html`<${Field} id=${`job-${key.replace(".", "-")}`}
    label=${FIELD_LABELS[key]} hint=${hint} error=${errorFor(key)} wide=${wide}>${control}<//>`;

  return html`${editing ? html`<p class="crumbs"><a href="/jobs">Jobs</a> / <a href=${`/jobs/${base.id}`}>${base.name || base.id}</a> /</p>` : ""}
    <${PageTitle}>${editing ? `Edit “${base.name || "job"}”` : "New job"}<//>
    ${stale
      ? html`<${StaleBanner} stale=${stale}
          onKeepMine=${() => {
            // The latest version, with the fields this user changed on top.
            const merged = fromJob(stale.latest);
            for (const key of stale.mine) merged[key] = values[key];
            setBase(stale.latest);
            setValues(merged);
            setStale(null);
          }}
          onTakeTheirs=${() => {
            setBase(stale.latest);
            setValues(fromJob(stale.latest));
            setStale(null);
          }} />`
      : ""}
    <${ErrorBox} error=${error && (other.length || !Object.keys(byField).length) ? error : null} />
    <form ref=${form} class="job-form" onSubmit=${submit} novalidate>
      <fieldset>
        <legend>What</legend>
        ${field("name", "One line, at most 200 characters.", input("name", { maxlength: 200 }))}
        ${field("scriptContent", "Python, run as __main__ in its own sandbox; at most 256 KiB.", (attrs) =>
          html`<textarea ...${attrs} name="scriptContent" rows="10" spellcheck="false" class="code"
            value=${values.scriptContent} onInput=${(e) => set("scriptContent")(e.currentTarget.value)}></textarea>`, true)}
      </fieldset>
      <fieldset>
        <legend>When</legend>
        <div class="field" role="radiogroup" aria-labelledby="type-label">
          <span id="type-label" class="label">Type</span>
          ${["JOB_TYPE_RECURRING", "JOB_TYPE_ONE_TIME"].map(
            (t) => html`<label class="inline"><input type="radio" name="jobType" value=${t} checked=${values.jobType === t}
              disabled=${editing} onChange=${() => set("jobType")(t)} /> ${label(t)}</label>`,
          )}
          ${editing ? html`<p class="hint">A job's type cannot change.</p>` : ""}
        </div>
        ${recurring
          ? field("cronExpr", "5 fields (minute hour day month weekday), 6 with seconds first, or @hourly, @daily, …",
              input("cronExpr", { class: "mono", spellcheck: false, autocomplete: "off" }))
          : field("scheduledAt", `In your time zone (${Intl.DateTimeFormat().resolvedOptions().timeZone}).`,
              input("scheduledAt", { type: "datetime-local", step: 1 }))}
        ${field("timezone", "IANA name; the cron expression is read in it.", (attrs) => html`<input ...${attrs} name="timezone"
          list="zones" value=${values.timezone} autocomplete="off" onInput=${(e) => set("timezone")(e.currentTarget.value)} />
          <datalist id="zones">${ZONES.map((z) => html`<option value=${z} />`)}</datalist>`)}
        ${recurring ? html`<${Preview} state=${preview} timezone=${values.timezone} />` : ""}
      </fieldset>
      <fieldset>
        <legend>How</legend>
        ${field("timeoutSeconds", "Seconds, 1-86400: one attempt is killed after it.", input("timeoutSeconds", { type: "number", min: 1, max: 86400 }))}
        ${field("queue", "Workers pull the queues they are given; [a-z0-9_-], at most 64.", input("queue"))}
        ${field("maxLatenessSeconds", "Seconds, 0-86400: a run that cannot start this late after its slot is skipped; 0 means no limit.",
          input("maxLatenessSeconds", { type: "number", min: 0, max: 86400 }))}
        ${field("network", EXPLAIN.network[values.network], (attrs) =>
          html`<${Select} attrs=${attrs} value=${values.network} options=${Object.keys(EXPLAIN.network)} onChange=${set("network")} />`)}
      </fieldset>
      <fieldset>
        <legend>Retries</legend>
        ${field("retryPolicy.maxAttempts", "Attempts in all, 1-100; 1 means no retry.",
          input("retryPolicy.maxAttempts", { type: "number", min: 1, max: 100 }))}
        ${field("retryPolicy.strategy", EXPLAIN.retryStrategy[values["retryPolicy.strategy"]], (attrs) =>
          html`<${Select} attrs=${attrs} value=${values["retryPolicy.strategy"]} options=${Object.keys(EXPLAIN.retryStrategy)}
            onChange=${set("retryPolicy.strategy")} />`)}
        ${field("retryPolicy.initialDelaySeconds", "Seconds before the first retry, 0-86400.",
          input("retryPolicy.initialDelaySeconds", { type: "number", min: 0, max: 86400 }))}
        ${field("retryPolicy.maxDelaySeconds", "Seconds, at least the initial delay; at most 86400.",
          input("retryPolicy.maxDelaySeconds", { type: "number", min: 0, max: 86400 }))}
        ${values["retryPolicy.strategy"] === EXPONENTIAL
          ? field("retryPolicy.multiplier", "1-10: how much each delay grows.",
              input("retryPolicy.multiplier", { type: "number", min: 1, max: 10, step: "any" }))
          : ""}
      </fieldset>
      <fieldset>
        <legend>Policies</legend>
        ${field("misfirePolicy", EXPLAIN.misfirePolicy[values.misfirePolicy], (attrs) =>
          html`<${Select} attrs=${attrs} value=${values.misfirePolicy} options=${Object.keys(EXPLAIN.misfirePolicy)} onChange=${set("misfirePolicy")} />`)}
        ${field("overlapPolicy", EXPLAIN.overlapPolicy[values.overlapPolicy], (attrs) =>
          html`<${Select} attrs=${attrs} value=${values.overlapPolicy} options=${Object.keys(EXPLAIN.overlapPolicy)} onChange=${set("overlapPolicy")} />`)}
      </fieldset>
      <div class="actions">
        <button type="submit" class="primary" disabled=${busy}>${editing ? "Save changes" : "Create job"}</button>
        <a class="button" href=${editing ? `/jobs/${base.id}` : "/jobs"}>Cancel</a>
        ${editing ? html`<span class="muted small">Editing version ${base.version}, read <${Time} value=${base.updateTime} /></span>` : ""}
      </div>
    </form>`;
}
