// Keeps a project's runs table current: its rows come from the server, rendered by the same
// template as the page's first view (projects/_run_rows.html), through rw.live's polling.
"use strict";
(function () {
  const table = document.getElementById("runs-table");
  if (!table) return;
  const body = table.querySelector("tbody");
  const note = document.getElementById("runs-updated");
  const filter = document.getElementById("runs-filter");

  // Times and durations are shown in the viewer's locale and ticking units.
  function formatCells(root) {
    for (const td of root.querySelectorAll("[data-duration]")) td.textContent = rw.duration(td.dataset.duration);
    for (const td of root.querySelectorAll("[data-time]")) td.textContent = rw.when(td.dataset.time);
  }

  // Rows whose name, preset or status contain every word typed; the rest are hidden (a
  // hidden row keeps its tick, so a comparison can span several filters).
  function applyFilter() {
    if (!filter) return;
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const tr of body.querySelectorAll("tr[data-run]")) {
      tr.hidden = !words.every((w) => tr.dataset.search.includes(w));
    }
  }

  let shown = "";
  function render(rows) {
    if (rows === shown) return;  // nothing changed: leave the table (and a hovered row) alone
    shown = rows;
    // The refresh rebuilds the rows: keep the boxes the user ticked.
    const picked = new Set(Array.from(body.querySelectorAll("input[name=run]:checked"), (b) => b.value));
    body.innerHTML = rows;
    for (const box of body.querySelectorAll("input[name=run]")) box.checked = picked.has(box.value);
    formatCells(body);
    applyFilter();
  }

  if (filter) filter.addEventListener("input", applyFilter);
  formatCells(table);
  rw.live({
    poll: () => table.dataset.source,
    every: 2000,
    onUpdate: (data) => {
      render(data.rows);
      note.textContent = "Updated " + new Date().toLocaleTimeString();
    },
    onTrouble: (lost) => { if (lost) note.textContent = "Could not refresh; retrying…"; },
    // The table's JSON carries its rows; it never ends while the page is open.
    unpack: (body) => ({ updates: [{ data: body }], end: null }),
  });
})();
