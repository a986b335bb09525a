// Pieces every page uses: times, status badges, run strips, errors, fields, dialogs, polling.
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "./html.js";
import { FINAL, label, localTime, slug, SKIP_REASONS, utcTime } from "./format.js";

/** A time in the viewer's zone; its UTC reading on hover. */
export function Time({ value, children }) {
  if (!value) return html`<span class="muted">—</span>`;
  return html`<time datetime=${value} title=${utcTime(value)}>${children || localTime(value)}</time>`;
}

export function StatusBadge({ status, reason }) {
  const text = label(status);
  return html`<span class="badge st-${slug(status)}">${text}${reason ? html`<span class="reason">: ${reason}</span>` : ""}</span>`;
}

export function StateBadge({ state }) {
  return html`<span class="badge state-${slug(state)}">${label(state)}</span>`;
}

function runTitle(run) {
  const when = localTime(run.startedAt || run.scheduledAt);
  const reason = run.status === "RUN_STATUS_SKIPPED" && run.skipReason ? ` (${run.skipReason})` : "";
  return `${label(run.status)}${reason}, attempt ${run.attempt}, ${when}`;
}

/** The last runs as a strip of cells, oldest first; SKIPPED cells are hatched. */
export function RunStrip({ jobId, runs, size = 20 }) {
  const cells = (runs || []).slice(0, size).reverse();
  if (!cells.length) return html`<span class="muted">no runs yet</span>`;
  return html`<ol class="strip" aria-label=${`Last ${cells.length} runs, oldest first`}>
    ${cells.map(
      (run) => html`<li key=${run.id}>
        <a class="cell st-${slug(run.status)}" href=${`/jobs/${jobId}/runs/${run.id}`} title=${runTitle(run)}
          aria-label=${runTitle(run)}></a>
      </li>`,
    )}
  </ol>`;
}

export function SkipReason({ reason }) {
  if (!reason) return null;
  return html`<span title=${SKIP_REASONS[reason] || reason}>${reason}: ${SKIP_REASONS[reason] || ""}</span>`;
}

export function isFinal(run) {
  return FINAL.has(run.status);
}

/** An error from the API (or anything thrown), said plainly. */
export function ErrorBox({ error, children }) {
  if (!error) return null;
  const status = error.status ? ` (${error.status}${error.code ? ` ${error.code}` : ""})` : "";
  return html`<div class="alert error" role="alert">
    <strong>${error.message || String(error)}</strong>${status}
    ${error.violations && error.violations.length
      ? html`<ul>${error.violations.map((v) => html`<li><code>${v.field}</code> ${v.description}</li>`)}</ul>`
      : ""}
    ${children}
  </div>`;
}

export function Notice({ message }) {
  return html`<p class="notice" role="status" aria-live="polite">${message || ""}</p>`;
}

/** A labelled form control with its hint and its error (announced, and tied by aria-describedby). */
export function Field({ id, label: text, hint, error, children, wide }) {
  const describedBy = [hint ? `${id}-hint` : "", error ? `${id}-error` : ""].filter(Boolean).join(" ");
  const control = children({ id, "aria-describedby": describedBy || undefined, "aria-invalid": error ? "true" : undefined });
  return html`<div class=${`field${error ? " invalid" : ""}${wide ? " wide" : ""}`}>
    <label for=${id}>${text}</label>
    ${control}
    ${hint ? html`<p class="hint" id=${`${id}-hint`}>${hint}</p>` : ""}
    ${error ? html`<p class="field-error" id=${`${id}-error`} role="alert">${error}</p>` : ""}
  </div>`;
}

/** A button that asks first, in a modal dialog (focus moves into it and back). */
let dialogs = 0;

export function ConfirmButton({ label: text, title, message, confirmLabel, danger, onConfirm, disabled }) {
  const dialog = useRef(null);
  const [titleId] = useState(() => `dialog-${(dialogs += 1)}`);
  const [busy, setBusy] = useState(false);
  const open = () => dialog.current && dialog.current.showModal();
  const close = () => dialog.current && dialog.current.close();
  const confirm = async () => {
    setBusy(true);
    try {
      await onConfirm();
    } finally {
      setBusy(false);
      close();
    }
  };
  return html`<span>
    <button type="button" class=${danger ? "danger" : ""} onClick=${open} disabled=${disabled}>${text}</button>
    <dialog ref=${dialog} aria-labelledby=${titleId}>
      <h2 id=${titleId}>${title}</h2>
      <p>${message}</p>
      <div class="actions">
        <button type="button" onClick=${close}>Cancel</button>
        <button type="button" class=${danger ? "danger" : "primary"} onClick=${confirm} disabled=${busy}>
          ${confirmLabel || text}
        </button>
      </div>
    </dialog>
  </span>`;
}

/** Run ``load`` now and every ``ms`` while the page is visible; re-run when ``deps`` change. */
export function usePoll(load, ms, deps) {
  const saved = useRef(load);
  saved.current = load;
  useEffect(() => {
    let timer = null;
    let stopped = false;
    const controller = new AbortController();
    const tick = async () => {
      timer = null;
      if (stopped) return;
      if (document.visibilityState !== "hidden") {
        try {
          await saved.current(controller.signal);
        } catch (error) {
          if (error.name !== "AbortError") console.warn(error);
        }
      }
      if (!stopped && ms) timer = setTimeout(tick, ms);
    };
    tick();
    const onVisible = () => {
      if (document.visibilityState === "visible" && timer !== null) {
        clearTimeout(timer);
        tick();
      }
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      stopped = true;
      controller.abort();
      if (timer !== null) clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, deps);
}

export function PageTitle({ children, title }) {
  useEffect(() => {
    document.title = `${title || (typeof children === "string" ? children : "")} · jobmesh`;
  }, [title, children]);
  return html`<h1 tabindex="-1">${children}</h1>`;
}

export function Loading() {
  return html`<p class="muted" role="status">Loading…</p>`;
}
