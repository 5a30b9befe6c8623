// The run page's "Sample from a checkpoint" box and the checkpoints panel's export action.
// A sample is a worker job: the page posts its settings, then follows the job with rw.live
// (its SSE stream, or polling its JSON where a stream cannot be held) and shows the text as
// the tokens come. The history (every sample of the run) is read from the server.
(function () {
  "use strict";
  const box = document.getElementById("run-sample-box");
  if (!box) return;
  const form = document.getElementById("sample-form");
  const csrf = (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";
  const output = document.getElementById("sample-output");
  const badge = document.getElementById("sample-status");
  const promptEl = document.getElementById("sample-text-prompt");
  const newText = document.getElementById("sample-text-new");
  const errorEl = document.getElementById("sample-error");
  const history = document.getElementById("sample-history");
  const empty = document.getElementById("sample-history-empty");
  const jobUrl = (base, id) => base.replace(/\/0\/(\w*)$/, "/" + id + "/$1");

  const cancel = document.getElementById("sample-cancel");
  let shown = null;  // the id of the sample in the output

  function showState(s) {
    output.hidden = false;
    shown = s.id;
    if (cancel) cancel.hidden = !s.is_active;
    badge.className = "badge status-" + s.status;
    badge.textContent = s.status;
    newText.textContent = s.text || "";
    if (s.error) newText.textContent += "\n[" + s.error + "]";
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  async function loadHistory() {
    const response = await fetch(box.dataset.historyUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) return { samples: [] };
    const body = await response.json();
    const tbody = history.querySelector("tbody");
    tbody.replaceChildren();
    for (const job of body.samples) {
      const tr = document.createElement("tr");
      tr.dataset.job = job.id;
      tr.append(cell(job.step, "num"));
      const td = document.createElement("td");
      const pre = document.createElement("pre");
      const p = document.createElement("span");
      p.className = "sample-prompt";
      p.textContent = job.prompt;
      pre.append(p, document.createTextNode(job.text));
      td.append(pre);
      tr.append(td);
      tr.append(cell("T " + job.temperature + ", top-p " + job.top_p + ", " + job.max_tokens + " tokens", "small"));
      const status = cell("");
      const b = document.createElement("span");
      b.className = "badge status-" + job.status;
      b.textContent = job.status;
      if (job.error) b.title = job.error;
      status.append(b);
      tr.append(status);
      tr.append(cell(job.created_by, "small"));
      tbody.append(tr);
    }
    history.hidden = body.samples.length === 0;
    empty.hidden = body.samples.length !== 0;
    return body;
  }

  // Follows job ``id``: each state to ``onUpdate``, the last one to ``onEnd`` as well.
  function follow(id, onUpdate, onEnd) {
    rw.live({
      stream: jobUrl(box.dataset.streamUrl, id),
      poll: () => jobUrl(box.dataset.statusUrl, id),
      every: 1000,
      onUpdate: onUpdate,
      onEnd: (s) => { if (s && s.status) onUpdate(s); onEnd(s); },
      unpack: (s) => ({ updates: [{ data: s }], end: s.is_active ? null : s }),
    });
  }

  function showErrors(body) {
    const errors = body.errors || {};
    errorEl.textContent = Object.keys(errors).length
      ? Object.entries(errors).map(([k, v]) => k + ": " + v).join("; ")
      : body.error || "Could not start the job.";
    errorEl.hidden = false;
  }

  async function post(url, data) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      body: JSON.stringify(data),
    });
    let body = {};
    try { body = await response.json(); } catch (e) { body = { error: "HTTP " + response.status }; }
    return { ok: response.ok, body: body };
  }

  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errorEl.hidden = true;
      const data = Object.fromEntries(new FormData(form).entries());
      delete data.csrfmiddlewaretoken;
      const button = document.getElementById("sample-button");
      button.disabled = true;
      const { ok, body } = await post(box.dataset.startUrl, data);
      if (!ok) {
        showErrors(body);
        button.disabled = false;
        return;
      }
      promptEl.textContent = body.prompt;
      showState(body);
      loadHistory();
      follow(body.id, showState, () => { button.disabled = false; loadHistory(); });
    });
  }

  if (cancel) {
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      const { ok, body } = await post(box.dataset.cancelUrl.replace(/\/0\/cancel$/, "/" + shown + "/cancel"), {});
      cancel.disabled = false;
      if (ok) showState(body);
    });
  }

  document.addEventListener("click", async (event) => {
    const pick = event.target.closest("[data-sample-step]");
    if (pick && form) {
      document.getElementById("sample-step").value = pick.dataset.sampleStep;
      document.getElementById("sample-prompt").focus();
      return;
    }
    const exporter = event.target.closest("[data-export-step]");
    if (!exporter) return;
    event.preventDefault();
    const url = box.dataset.exportUrl.replace(/\/0\/export$/, "/" + exporter.dataset.exportStep + "/export");
    const { ok, body } = await post(url, {});
    if (!ok) {
      exporter.textContent = "Export failed: " + (body.error || "error");
      return;
    }
    const note = document.createElement("span");
    note.className = "muted";
    note.textContent = "exporting…";
    exporter.replaceWith(note);
    follow(body.id, () => {}, (s) => {
      if (s && s.archive_url) {
        const a = document.createElement("a");
        a.href = s.archive_url;
        a.setAttribute("download", "");
        a.textContent = "HF archive";
        note.replaceWith(a);
      } else {
        note.textContent = "export " + ((s && s.status) || "ended") + (s && s.error ? ": " + s.error.split("\n")[0] : "");
      }
    });
  });

  // A sample still running (started elsewhere, or before a reload) is followed too.
  loadHistory().then((body) => {
    const active = body.samples.find((j) => j.is_active);
    if (active) { promptEl.textContent = active.prompt; showState(active); follow(active.id, showState, loadHistory); }
  });
})();
