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

  // One chart per div; its key can change (the metric picker): the chart reads div.dataset.key.
  function chartOf(div) {
    const load = (window) => rw.fetchSeries(div.dataset.seriesUrl,
      [...state.runs.map((run) => ["run", run.id]), ["key", div.dataset.key]], window);
    const layout = (data) => {
      const empty = !data.series.some((s) => s.steps.length);
      return rw.chartLayout(div.dataset.key, true, empty ? "no points for " + div.dataset.key : "");
    };
    return rw.seriesChart(div, load, traces, layout);
  }
  const lossChart = chartOf(lossDiv);
  const metricChart = chartOf(metricDiv);

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
