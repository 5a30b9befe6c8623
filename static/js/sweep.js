// The sweep page: a parallel-coordinates plot of each trial's config against the sweep's metric
// and a sortable table of the trials, kept current with rw.live: the sweep's SSE stream (its whole
// state each time one of its runs changes), or polling the sweep's JSON where a stream cannot be held.
"use strict";
(function () {
  const script = document.getElementById("sweep-script");
  const plot = document.getElementById("sweep-plot");
  const note = document.getElementById("sweep-plot-note");
  const table = document.getElementById("sweep-table");
  const runUrl = (id) => script.dataset.runUrl.replace("/0/", "/" + id + "/");
  let sort = { key: "trial", descending: false };
  let state = JSON.parse(document.getElementById("sweep-state").textContent);

  function paramPaths() { return Object.keys(state.parameters); }

  function columns() {
    const cols = [
      { key: "trial", label: "#", num: true, get: (t) => t.trial },
      { key: "run", label: "Run", get: (t) => t.run_name || "" },
      { key: "status", label: "Status", get: (t) => t.status },
      { key: "step", label: "Step", num: true, get: (t) => t.step },
    ];
    for (const path of paramPaths()) {
      cols.push({ key: "p:" + path, label: path, num: true, get: (t) => t.values[path] });
    }
    cols.push({ key: "metric", label: state.metric, num: true, get: (t) => t.metric });
    if (state.halving_step) {
      cols.push({ key: "rung", label: state.metric + " @ " + state.halving_step, num: true, get: (t) => t.rung_value });
    }
    return cols;
  }

  function shown(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
    return String(value);
  }

  // Blanks (a run with no value yet, a trial not launched) go last in either direction.
  function compare(a, b, descending) {
    const missingA = a === null || a === undefined, missingB = b === null || b === undefined;
    if (missingA || missingB) return missingA === missingB ? 0 : missingA ? 1 : -1;
    const order = typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b));
    return descending ? -order : order;
  }

  function renderTable() {
    const cols = columns();
    const head = table.tHead.rows[0];
    head.replaceChildren();
    for (const col of cols) {
      const th = document.createElement("th");
      th.dataset.column = col.key;
      if (col.num) th.className = "num";
      const button = document.createElement("a");
      button.href = "#";
      button.className = "sort-link";
      button.textContent = col.label;
      if (sort.key === col.key) {
        th.setAttribute("aria-sort", sort.descending ? "descending" : "ascending");
        button.classList.add(sort.descending ? "sorted-desc" : "sorted-asc");
      }
      button.addEventListener("click", function (event) {
        event.preventDefault();
        sort = { key: col.key, descending: sort.key === col.key ? !sort.descending : false };
        renderTable();
      });
      th.appendChild(button);
      head.appendChild(th);
    }
    const by = cols.find((c) => c.key === sort.key) || cols[0];
    const trials = state.trials.slice().sort((a, b) => compare(by.get(a), by.get(b), sort.descending));
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const trial of trials) {
      const tr = document.createElement("tr");
      tr.dataset.trial = trial.trial;
      if (trial.halted) tr.className = "muted";
      for (const col of cols) {
        const td = document.createElement("td");
        if (col.num) td.className = "num";
        if (col.key === "run" && trial.run_id) {
          const link = document.createElement("a");
          link.href = runUrl(trial.run_id);
          link.textContent = trial.run_name;
          td.appendChild(link);
        } else if (col.key === "status") {
          const badge = document.createElement("span");
          badge.className = "badge status-" + trial.status;
          badge.textContent = trial.halted ? trial.status + " (halved)" : trial.status;
          td.appendChild(badge);
        } else {
          td.textContent = shown(col.get(trial));
        }
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function dimension(path, trials) {
    const spec = state.parameters[path];
    const values = trials.map((t) => t.values[path]);
    if (values.every((v) => typeof v === "number")) {
      // The axis spans the whole search, so it stays put as runs report.
      const bounds = "values" in spec ? [Math.min(...spec.values), Math.max(...spec.values)] : [spec.min, spec.max];
      const log = spec.scale === "log";
      const range = log ? bounds.map(Math.log10) : bounds;
      const dim = { label: (log ? "log10 " : "") + path, values: log ? values.map(Math.log10) : values };
      if (range.every(Number.isFinite) && range[0] < range[1]) dim.range = range;
      return dim;
    }
    const names = Array.from(new Set(values.map(String)));  // strings and booleans: one tick each
    return {
      label: path, values: values.map((v) => names.indexOf(String(v))),
      tickvals: names.map((_, i) => i), ticktext: names,
    };
  }

  function renderPlot() {
    if (!window.Plotly) return;
    const withMetric = state.trials.filter((t) => typeof t.metric === "number");
    const trials = withMetric.length ? withMetric : state.trials;
    const dimensions = paramPaths().map((path) => dimension(path, trials));
    const line = {};
    if (withMetric.length) {
      const metrics = withMetric.map((t) => t.metric);
      dimensions.push({ label: state.metric, values: metrics });
      line.color = metrics;
      line.colorscale = "Viridis";
      line.reversescale = state.goal === "min";  // the best runs are drawn in the bright colour
      line.showscale = true;
      note.textContent = withMetric.length + " of " + state.trials.length + " trials have logged " + state.metric;
    } else {
      line.color = "#4c78a8";
      note.textContent = "No run has logged " + state.metric + " yet: the configs alone";
    }
    Plotly.react(plot, [{ type: "parcoords", dimensions: dimensions, line: line }],
      { margin: { l: 70, r: 70, t: 50, b: 30 }, height: 380 },
      { responsive: true, displaylogo: false });
  }

  function render() {
    document.getElementById("sweep-status").textContent = state.status;
    document.getElementById("sweep-status").className = "badge status-" + state.status;
    document.getElementById("sweep-launched").textContent = state.launched;
    const error = document.getElementById("sweep-error");
    error.hidden = !state.error;
    document.getElementById("sweep-error-text").textContent = state.error;
    renderTable();
    renderPlot();
  }

  render();
  if (state.status === "running") {
    rw.live({
      stream: script.dataset.streamUrl,
      poll: () => script.dataset.pollUrl,
      every: 3000,
      unpack: (body) => ({ updates: [{ data: body }], end: body.status === "running" ? null : body }),
      onUpdate: function (data) { state = data; render(); },
      onEnd: function (data) { if (data && data.trials) { state = data; render(); } },
    });
  }
})();
