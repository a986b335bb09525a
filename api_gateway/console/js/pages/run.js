// A run: status, times, attempt, worker, exit code, and its output — live while it runs
// (following …/logs?follow=true), the stored tail once it has ended.
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "../html.js";
import { api, follow } from "../api.js";
import { ConfirmButton, ErrorBox, isFinal, Loading, Notice, PageTitle, SkipReason, StatusBadge, Time } from "../components.js";
import { duration, label, runDuration, shortId } from "../format.js";

const MAX_LIVE_CHARS = 2 * 1024 * 1024; // what the page keeps of live output (the newest part)

function Output({ chunks, live, truncated }) {
  const box = useRef(null);
  const pinned = useRef(true);
  useEffect(() => {
    const el = box.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, [chunks]);
  const onScroll = () => {
    const el = box.current;
    pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };
  return html`<section aria-labelledby="out-title">
    <h2 id="out-title">Output ${live ? html`<span class="badge live">live</span>` : html`<span class="muted small">(stored tail)</span>`}</h2>
    ${truncated ? html`<p class="muted small">${truncated}</p>` : ""}
    <pre class="output" ref=${box} onScroll=${onScroll} tabindex="0" aria-label="Run output"
      data-testid="output">${chunks.length
        ? chunks.map((c, i) => html`<span key=${i} class=${c.stream === "stderr" ? "stderr" : "stdout"}>${c.data}</span>`)
        : html`<span class="muted">${live ? "Waiting for output…" : "No output."}</span>`}</pre>
    <p class="muted small"><span class="legend stdout">stdout</span> <span class="legend stderr">stderr</span></p>
  </section>`;
}

function Facts({ run, now }) {
  const d = runDuration(run, now);
  const rows = [
    ["Status", html`<${StatusBadge} status=${run.status} />`],
    run.status === "RUN_STATUS_SKIPPED" ? ["Reason", html`<${SkipReason} reason=${run.skipReason} />`] : null,
    ["Attempt", run.attempt],
    ["Trigger", label(run.trigger)],
    ["Slot", html`<${Time} value=${run.scheduledAt} />`],
    ["Due", html`<${Time} value=${run.dueAt} />`],
    ["Queued", html`<${Time} value=${run.queuedAt} />`],
    ["Started", html`<${Time} value=${run.startedAt} />`],
    ["Finished", html`<${Time} value=${run.finishedAt} />`],
    ["Duration", d === null ? "—" : duration(d)],
    ["Worker", run.workerId ? html`<code>${run.workerId}</code>` : "—"],
    ["Exit code", isFinal(run) && run.status !== "RUN_STATUS_SKIPPED" ? html`<span data-testid="exit-code">${run.exitCode}</span>` : "—"],
    run.error ? ["Error", html`<span class="error-text">${run.error}</span>`] : null,
    ["Id", html`<code>${run.id}</code>`],
  ].filter(Boolean);
  return html`<dl class="definition">${rows.map(([t, v]) => html`<div><dt>${t}</dt><dd>${v}</dd></div>`)}</dl>`;
}

function appendChunk(chunks, chunk) {
  const next = [...chunks];
  const last = next[next.length - 1];
  if (last && last.stream === chunk.stream) next[next.length - 1] = { ...last, data: last.data + chunk.data };
  else next.push(chunk);
  let size = next.reduce((n, c) => n + c.data.length, 0);
  while (size > MAX_LIVE_CHARS && next.length) {
    const drop = Math.min(next[0].data.length, size - MAX_LIVE_CHARS);
    size -= drop;
    if (drop === next[0].data.length) next.shift();
    else next[0] = { ...next[0], data: next[0].data.slice(drop) };
  }
  return next;
}

function storedChunks(logs) {
  const out = [];
  if (logs.stdout) out.push({ stream: "stdout", data: logs.stdout });
  if (logs.stderr) out.push({ stream: "stderr", data: logs.stderr });
  return out;
}

export function RunPage({ params, role }) {
  const { jobId, runId } = params;
  const [job, setJob] = useState(null);
  const [run, setRun] = useState(null);
  const [chunks, setChunks] = useState([]);
  const [live, setLive] = useState(false);
  const [truncated, setTruncated] = useState("");
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState("");
  const [now, setNow] = useState(Date.now());

  useEffect(() => {
    api.get(`/api/jobs/${jobId}`).then(setJob, () => {});
  }, [jobId]);

  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    const base = `/api/jobs/${jobId}/runs/${runId}`;
    const showStored = async () => {
      const logs = await api.get(`${base}/logs`, { signal });
      setChunks(storedChunks(logs));
      const cut = [logs.stdoutTruncated ? "stdout" : "", logs.stderrTruncated ? "stderr" : ""].filter(Boolean);
      setTruncated(cut.length ? `The beginning of ${cut.join(" and ")} was dropped: only the tail is kept.` : "");
    };
    (async () => {
      try {
        const first = await api.get(base, { signal });
        setRun(first);
        if (!isFinal(first)) {
          setLive(true);
          let ended = false;
          // Reconnect if the stream drops before the run ends (the server replays what was captured).
          for (let attempt = 0; !ended && attempt < 5 && !signal.aborted; attempt += 1) {
            setChunks([]);
            try {
              await follow(
                `${base}/logs?follow=true`,
                (kind, data) => {
                  if (kind === "run") {
                    setRun(data);
                    if (isFinal(data)) ended = true;
                  } else if (kind === "chunk") {
                    const stream = data.stream === "LOG_STREAM_STDERR" ? "stderr" : "stdout";
                    setChunks((c) => appendChunk(c, { stream, data: data.data }));
                  } else if (kind === "error") {
                    setError(new Error(data.error ? data.error.message : "the output stream failed"));
                  }
                },
                { signal },
              );
            } catch (err) {
              if (err.name === "AbortError") return;
              if (attempt === 4) throw err;
            }
            if (!ended) {
              const current = await api.get(base, { signal });
              setRun(current);
              ended = isFinal(current);
              if (!ended) await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
            }
          }
          setLive(false);
        }
        if (!signal.aborted) await showStored();
      } catch (err) {
        if (err.name !== "AbortError") setError(err);
      }
    })();
    return () => controller.abort();
  }, [jobId, runId]);

  useEffect(() => {
    if (!run || isFinal(run)) return undefined;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [run && run.status]);

  const title = `Run ${shortId(runId)}`;
  if (!run) return html`<${PageTitle}>${title}<//>${error ? html`<${ErrorBox} error=${error} />` : html`<${Loading} />`}`;
  return html`<p class="crumbs"><a href="/jobs">Jobs</a> / <a href=${`/jobs/${jobId}`}>${job ? job.name || shortId(jobId) : shortId(jobId)}</a> /</p>
    <div class="page-head">
      <${PageTitle} title=${title}>${title} <span aria-live="polite"><${StatusBadge} status=${run.status} /></span><//>
      ${role && role !== "ROLE_VIEWER" && !isFinal(run)
        ? html`<${ConfirmButton} label="Cancel run" danger title="Cancel this run?"
            message="The script is stopped; the run ends CANCELLED and is not retried."
            confirmLabel="Cancel the run"
            onConfirm=${async () => {
              try {
                setRun(await api.post(`/api/jobs/${jobId}/runs/${runId}/cancel`));
                setNotice("Cancel requested.");
              } catch (err) {
                setError(err);
              }
            }} />`
        : ""}
    </div>
    <${Notice} message=${notice} />
    <${ErrorBox} error=${error} />
    <div class="columns run-layout">
      <section aria-labelledby="facts-title"><h2 id="facts-title">Details</h2><${Facts} run=${run} now=${now} /></section>
      <${Output} chunks=${chunks} live=${live} truncated=${truncated} />
    </div>`;
}
