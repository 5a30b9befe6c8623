// Keeps a project's runs table current by polling its JSON every 2 s.
"use strict";
(function () {
  const table = document.getElementById("runs-table");
  if (!table) return;
  const body = table.querySelector("tbody");
  const note = document.getElementById("runs-updated");
  const source = table.dataset.source;

  function row(run, picked) {
    const tr = rw.el("tr", { "data-run": run.id });
    const pick = rw.el("td", { class: "pick" });
    const box = rw.el("input", { type: "checkbox", name: "run", value: run.id, form: "compare-form",
                                 "aria-label": "Compare " + run.name });
    box.checked = picked.has(String(run.id));
    pick.appendChild(box);
    tr.appendChild(pick);
    const name = rw.el("td");
    name.appendChild(rw.el("a", { href: run.url }, run.name));
    if (run.preset) { name.appendChild(document.createTextNode(" ")); name.appendChild(rw.el("span", { class: "tag" }, run.preset)); }
    tr.appendChild(name);
    const status = rw.el("td");
    status.appendChild(rw.el("span", { class: "badge status-" + run.status }, run.status));
    tr.appendChild(status);
    const step = rw.el("td", { class: "num" }, String(run.step));
    if (run.max_steps) step.appendChild(rw.el("span", { class: "muted" }, " / " + run.max_steps));
    tr.appendChild(step);
    tr.appendChild(rw.el("td", { class: "num" }, rw.loss(run.last_loss)));
    tr.appendChild(rw.el("td", { class: "num" }, rw.duration(run.duration_s)));
    tr.appendChild(rw.el("td", { class: "muted" }, rw.when(run.created_at)));
    return tr;
  }

  function render(runs) {
    if (!runs.length) return;  // keep the server's "no runs yet" row
    // The refresh rebuilds the rows: keep the boxes the user ticked.
    const picked = new Set(Array.from(body.querySelectorAll("input[name=run]:checked"), (b) => b.value));
    body.replaceChildren(...runs.map((run) => {
      const tr = row(run, picked);
      tr.dataset.search = [run.name, run.preset || "", run.status].join(" ").toLowerCase();
      return tr;
    }));
    applyFilter();
  }

  // Rows whose name, preset or status contain every word typed; the rest are hidden (a
  // hidden row keeps its tick, so a comparison can span several filters).
  const filter = document.getElementById("runs-filter");
  function applyFilter() {
    if (!filter) return;
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const tr of body.querySelectorAll("tr[data-run]")) {
      const text = tr.dataset.search || tr.textContent.toLowerCase();
      tr.hidden = !words.every((w) => text.includes(w));
    }
  }
  if (filter) filter.addEventListener("input", applyFilter);

  // Format what the server rendered, before the first poll answers.
  for (const td of table.querySelectorAll("[data-duration]")) td.textContent = rw.duration(td.dataset.duration);
  for (const td of table.querySelectorAll("[data-time]")) td.textContent = rw.when(td.dataset.time);

  let failures = 0;
  async function poll() {
    if (document.hidden) return;
    try {
      const response = await fetch(source, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render((await response.json()).runs);
      failures = 0;
      note.textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (err) {
      failures += 1;
      note.textContent = "Could not refresh (" + err.message + "); retrying…";
    }
  }
  setInterval(poll, 2000);
})();
