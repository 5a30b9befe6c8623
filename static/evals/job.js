// Eval job page: follows the job's state (rw.live: its SSE stream, or polling its status where a
// stream cannot be held), moves the progress bar, reloads once the job ends.
(function () {
  "use strict";
  const script = document.getElementById("job-script");
  const state = JSON.parse(document.getElementById("job-state").textContent);
  const fill = document.getElementById("progress-fill");
  const bar = document.getElementById("progress-bar");
  const text = document.getElementById("progress-text");
  const task = document.getElementById("progress-task");
  const badge = document.getElementById("job-status");

  function show(s) {
    const pct = Math.round((s.progress || 0) * 100);
    fill.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", String(pct));
    text.textContent = pct + " %" + (s.status === "queued" ? " · waiting for a worker" : "") +
      (s.cancel_requested && s.is_active ? " · cancelling" : "");
    task.textContent = s.current_task || "";
    badge.textContent = s.status;
    badge.className = "badge status-" + s.status;
  }

  if (!state.is_active) return;
  rw.live({
    stream: script.dataset.streamUrl,
    poll: () => script.dataset.statusUrl,
    every: 1500,
    onUpdate: show,
    onEnd: () => window.location.reload(),  // results and errors are rendered by the server
    onTrouble: (lost) => { if (lost) text.textContent = "Lost contact with the server; retrying…"; },
    // The polled status JSON is the job's state (the stream's updates are too); an inactive job is the end.
    unpack: (s) => ({ updates: [{ data: s }], end: s.is_active ? null : s }),
  });
})();
