// Eval job page: poll the job's status, move the progress bar, reload once the job ends.
(function () {
  "use strict";
  const script = document.getElementById("job-script");
  const state = JSON.parse(document.getElementById("job-state").textContent);
  const url = script.dataset.statusUrl;
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

  async function poll() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.status);
      const s = await response.json();
      show(s);
      if (!s.is_active) {
        window.location.reload(); // results and errors are rendered by the server
        return;
      }
    } catch (err) {
      text.textContent = "Lost contact with the server; retrying…";
    }
    setTimeout(poll, 1500);
  }

  if (state.is_active) setTimeout(poll, 1000);
})();
