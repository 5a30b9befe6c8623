// The comparison page: one line per run on a loss chart and on a chart of any chosen metric.
"use strict";
(function () {
  const state = JSON.parse(document.getElementById("compare-state").textContent);
  const lossDiv = document.getElementById("compare-loss");
  const metricDiv = document.getElementById("compare-metric");
  const keySelect = document.getElementById("compare-key");
  const note = document.getElementById("compare-note");
  // Colour-blind-friendly, one per run (at most 8 runs are compared).
  const palette = ["#2563eb", "#f97316", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"];
  const PREFERRED_METRIC = "val/loss";

  for (const swatch of document.querySelectorAll("[data-swatch]")) {
    swatch.style.background = palette[Number(swatch.dataset.swatch) % palette.length];
  }

  // Two runs may share a name: the legend then tells them apart by id.
  const nameCounts = {};
  for (const run of state.runs) nameCounts[run.name] = (nameCounts[run.name] || 0) + 1;
  const label = (s) => (nameCounts[s.name] > 1 ? s.name + " #" + s.run : s.name);

  function traces(data) {
    return data.series.map((s, i) => ({
      x: s.steps, y: s.values, name: label(s), mode: "lines", connectgaps: false,
      line: { width: 2, color: palette[i % palette.length] },
    }));
  }

  const runParams = state.runs.map((run) => ["run", run.id]);
  // Each run's tokens-seen curve, read once, for charts whose x axis is "tokens seen".
  let tokensPromise = null;
  function tokensCurves() {
    if (!tokensPromise) {
      tokensPromise = rw.fetchSeries(lossDiv.dataset.seriesUrl, [...runParams, ["key", "perf/tokens_seen"]], {})
        .then((data) => data.series.map((s) => ({ steps: s.steps, values: s.values })));
    }
    return tokensPromise;
  }

  // One chart per div; its key can change (the metric picker): the chart reads div.dataset.key.
  // Its controls are the run page's (rw.panelControls); the view is kept per project.
  const storeKey = "runwright.compare.project" + state.project_id;
  let views = {};
  try { views = JSON.parse(localStorage.getItem(storeKey)) || {}; } catch (err) { views = {}; }
  function chartOf(div, name) {
    const load = (window, need) => rw.fetchSeries(div.dataset.seriesUrl,
      [...runParams, ["key", div.dataset.key], ...(need ? [["points", need.points]] : []),
       ...(need && need.times ? [["times", "1"]] : [])], window);
    const layout = (data) => {
      const empty = !data.series.some((s) => s.steps.length);
      return rw.chartLayout(div.dataset.key, true, empty ? "no points for " + div.dataset.key : "");
    };
    const chart = rw.seriesChart(div, load, traces, layout, { tokens: tokensCurves });
    const bar = div.parentElement.querySelector(".panel-controls");
    rw.panelControls(bar, chart, name,
      (window) => rw.windowUrl(div.dataset.csvUrl, [...runParams, ["key", div.dataset.key]], window),
      (view) => {
        views[name] = view;
        try { localStorage.setItem(storeKey, JSON.stringify(views)); } catch (err) { /* not kept */ }
      }, views[name]);
    return chart;
  }
  const lossChart = chartOf(lossDiv, "loss");
  const metricChart = chartOf(metricDiv, "metric");

  function showMetric(key) {
    metricDiv.dataset.key = key;
    return metricChart.draw();
  }

  async function init() {
    try {
      lossDiv.dataset.key = state.chart_keys[0];
      await lossChart.draw();
      const others = state.keys.filter((k) => k !== state.chart_keys[0]);
      const first = others.includes(PREFERRED_METRIC) ? PREFERRED_METRIC : others[0] || state.keys[0];
      if (first) { keySelect.value = first; await showMetric(first); }
      else Plotly.newPlot(metricDiv, [], rw.chartLayout("", false, "no metrics logged"), rw.plotConfig);
    } catch (err) {
      note.textContent = "Could not load the metrics (" + err.message + ").";
    }
  }

  keySelect.addEventListener("change", () => {
    if (keySelect.value) showMetric(keySelect.value).catch((err) => { note.textContent = err.message; });
  });
  init();
})();
