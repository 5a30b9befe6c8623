// Keeps a project's runs table current: its rows come from the server, rendered by the same
// template as the page's first view (projects/_run_rows.html), through rw.live's polling of
// the table's JSON with the page's own query (filter, columns, sort and page stay as shown).
// Tags are edited inline (rw.runTags, static/js/run_tags.js).
"use strict";
(function () {
  const table = document.getElementById("runs-table");
  if (!table) return;
  const body = table.querySelector("tbody");
  const note = document.getElementById("runs-updated");
  const count = document.getElementById("runs-count");

  // Times and durations are shown in the viewer's locale and ticking units.
  function formatCells(root) {
    for (const td of root.querySelectorAll("[data-duration]")) td.textContent = rw.duration(td.dataset.duration);
    for (const td of root.querySelectorAll("[data-time]")) td.textContent = rw.when(td.dataset.time);
  }

  let shown = "";
  function render(rows) {
    if (rows === shown) return;  // nothing changed: leave the table (and a hovered row) alone
    // A tag being typed would be lost with its row: wait for the next refresh.
    if (body.querySelector(".tag-input")) return;
    shown = rows;
    // The refresh rebuilds the rows: keep the boxes the user ticked.
    const picked = new Set(Array.from(body.querySelectorAll("input[name=run]:checked"), (b) => b.value));
    body.innerHTML = rows;
    for (const box of body.querySelectorAll("input[name=run]")) box.checked = picked.has(box.value);
    formatCells(body);
  }

  formatCells(table);
  if (window.rw.runTags) rw.runTags(table, table.dataset.tagsUrl);
  rw.live({
    poll: () => table.dataset.source + location.search,
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
