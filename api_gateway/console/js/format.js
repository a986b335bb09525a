// How values read: times in the viewer's zone (UTC on hover), durations, enum labels.

const local = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function parseTime(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function localTime(value) {
  const date = parseTime(value);
  return date ? local.format(date) : "—";
}

export function utcTime(value) {
  const date = parseTime(value);
  return date ? `${date.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, "")} UTC` : "";
}

/** A time in the given IANA zone, e.g. "Tue, 1 Dec 2026, 02:30:00 CET". */
export function zonedTime(value, zone) {
  const date = parseTime(value);
  if (!date) return "—";
  try {
    return new Intl.DateTimeFormat(undefined, {
      timeZone: zone || "UTC",
      weekday: "short",
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      timeZoneName: "short",
    }).format(date);
  } catch {
    return local.format(date);
  }
}

export function fromNow(value, now = Date.now()) {
  const date = parseTime(value);
  if (!date) return "";
  const seconds = Math.round((date.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relative.format(seconds, "second");
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function seconds(value) {
  const n = Number(value || 0);
  return n < 1 ? `${Math.round(n * 1000)} ms` : `${n.toFixed(n < 10 ? 2 : 1)} s`;
}

export function runDuration(run, now = Date.now()) {
  const start = parseTime(run.startedAt);
  if (!start) return null;
  const end = parseTime(run.finishedAt);
  return (end ? end.getTime() : now) - start.getTime();
}

const PREFIXES = /^(RUN_STATUS|RUN_TRIGGER|JOB_STATE|JOB_TYPE|RETRY_STRATEGY|MISFIRE_POLICY|OVERLAP_POLICY|NETWORK|ROLE|HEALTH_STATUS)_/;

/** "RUN_STATUS_TIMED_OUT" → "Timed out". */
export function label(value) {
  if (!value) return "—";
  const words = String(value).replace(PREFIXES, "").toLowerCase().replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** "RUN_STATUS_TIMED_OUT" → "timed-out" (CSS class suffix). */
export function slug(value) {
  return String(value || "").replace(PREFIXES, "").toLowerCase().replace(/_/g, "-");
}

export const FINAL = new Set([
  "RUN_STATUS_SUCCEEDED",
  "RUN_STATUS_FAILED",
  "RUN_STATUS_TIMED_OUT",
  "RUN_STATUS_CANCELLED",
  "RUN_STATUS_LOST",
  "RUN_STATUS_SKIPPED",
]);

export const RUN_STATUSES = [
  "RUN_STATUS_PENDING",
  "RUN_STATUS_QUEUED",
  "RUN_STATUS_RUNNING",
  "RUN_STATUS_SUCCEEDED",
  "RUN_STATUS_FAILED",
  "RUN_STATUS_TIMED_OUT",
  "RUN_STATUS_CANCELLED",
  "RUN_STATUS_LOST",
  "RUN_STATUS_SKIPPED",
];

export const SKIP_REASONS = {
  paused: "the job was paused",
  overlap: "the previous run was still running (overlap: forbid)",
  misfire: "missed while no scheduler ran (misfire policy)",
  late: "could not start within the job's maximum lateness",
  replaced: "replaced by a newer run (overlap: replace)",
  job_deleted: "the job was deleted",
};

/** The end of an id: ids begin with their creation time, so their ends tell them apart. */
export function shortId(id) {
  return id ? String(id).slice(-8) : "";
}
