// Keeps a project's runs table current: its rows come from the server, rendered by the same
// template as the page's first view (projects/_run_rows.html). rw.live follows the project's
// stream (pushed "these runs changed": the rows are then read again from the table's JSON with
// the page's own query, so filter, columns, sort and page stay as shown), or polls that JSON
// where a stream cannot be held (or with ?live=poll).
// Typing in the find box narrows the table as you type: the address is updated (it stays the
// shareable state of the table) and the rows are asked for at once. Tags are edited inline
// (rw.runTags, static/js/run_tags.js).
"use strict";
(function () {
  const table = document.getElementById("runs-table");
  if (!table) return;
  const body = table.querySelector("tbody");
  const note = document.getElementById("runs-updated");
  const count = document.getElementById("runs-count");
  const find = document.getElementById("runs-q");
  const compare = document.getElementById("compare-form");
  const pages = document.getElementById("runs-pages");

  // Ticked runs, kept while they are filtered out of view, so a comparison can span several filters.
  const picked = new Set(Array.from(body.querySelectorAll("input[name=run]:checked"), (b) => b.value));
  body.addEventListener("change", (event) => {
    const box = event.target.closest("input[name=run]");
    if (!box) return;
    if (box.checked) picked.add(box.value); else picked.delete(box.value);
  });
  function keepHiddenPicks() {
    for (const old of compare.querySelectorAll("input.picked-elsewhere")) old.remove();
    const shown = new Set(Array.from(body.querySelectorAll("input[name=run]"), (b) => b.value));
    for (const id of picked) {
      if (shown.has(id)) continue;
      const input = document.createElement("input");
      Object.assign(input, { type: "hidden", name: "run", value: id, className: "picked-elsewhere" });
      compare.append(input);
    }
  }

  // Times and durations are shown in the viewer's locale and ticking units.
  function formatCells(root) {
    for (const td of root.querySelectorAll("[data-duration]")) td.textContent = rw.duration(td.dataset.duration);
    for (const td of root.querySelectorAll("[data-time]")) td.textContent = rw.when(td.dataset.time);
  }

  let shown = "";
  function render(data) {
    if (count && data.total !== undefined) {
      count.textContent = data.total ? "Runs " + data.first + "–" + data.last + " of " + data.total : "No runs match.";
    }
    if (data.next_query !== undefined) {
      let next = document.getElementById("runs-next");
      if (data.next_query && !next) {
        next = Object.assign(document.createElement("a"), { id: "runs-next", className: "button", textContent: "Next page" });
        pages.append(next);
      }
      if (next) {
        next.hidden = !data.next_query;
        if (data.next_query) next.href = "?" + data.next_query;
      }
    }
    if (data.rows === shown) return;  // nothing changed: leave the table (and a hovered row) alone
    // A tag being typed would be lost with its row: wait for the next refresh.
    if (body.querySelector(".tag-input")) return;
    shown = data.rows;
    body.innerHTML = data.rows;
    for (const box of body.querySelectorAll("input[name=run]")) box.checked = picked.has(box.value);
    keepHiddenPicks();
    formatCells(body);
  }

  async function refreshNow() {
    const response = await fetch(table.dataset.source + location.search, {
      headers: { Accept: "application/json" }, credentials: "same-origin",
    });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  }

  const updated = () => { note.textContent = "Updated " + new Date().toLocaleTimeString(); };
  const trouble = () => { note.textContent = "Could not refresh; retrying…"; };

  if (find) {
    let timer = null;
    find.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const params = new URLSearchParams(location.search);
        params.delete("cursor");  // a new filter starts on its first page
        if (find.value.trim()) params.set("q", find.value); else params.delete("q");
        const query = params.toString();
        history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
        refreshNow().catch(trouble);
      }, 200);
    });
  }

  formatCells(table);
  if (window.rw.runTags) rw.runTags(table, table.dataset.tagsUrl);
  rw.live({
    stream: table.dataset.stream,
    poll: () => table.dataset.source + location.search,
    every: 2000,
    onUpdate: (data) => {
      if (Array.isArray(data.changed)) {
        // The stream says runs changed: read this page's rows again.
        refreshNow().then(updated, trouble);
        return;
      }
      render(data);
      updated();
    },
    onTrouble: (lost) => { if (lost) trouble(); },
    // The polled JSON carries the table's rows; it never ends while the page is open.
    unpack: (body) => ({ updates: [{ data: body }], end: null }),
  });
})();
