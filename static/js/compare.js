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

  async function loadSeries(key, window) {
    const url = new URL(lossDiv.dataset.seriesUrl, location.href);
    for (const run of state.runs) url.searchParams.append("run", run.id);
    url.searchParams.set("key", key);
    for (const [name, value] of Object.entries(window || {})) url.searchParams.set(name, value);
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
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

  const requests = new WeakMap();  // per chart: the latest request, so a slow answer never overwrites a newer one
  async function draw(div, key) {
    const mine = (requests.get(div) || 0) + 1;
    requests.set(div, mine);
    div.dataset.key = key;
    const data = await loadSeries(key);
    if (requests.get(div) !== mine) return;
    const empty = !data.series.some((s) => s.steps.length);
    Plotly.react(div, traces(data), rw.chartLayout(key, true, empty ? "no points for " + key : ""), rw.plotConfig);
  }

  async function refine(div, event) {
    const window = rw.zoomWindow(event);
    if (window === null || !div.data || !div.data.length) return;
    const mine = (requests.get(div) || 0) + 1;
    requests.set(div, mine);
    const data = await loadSeries(div.dataset.key, window);
    if (requests.get(div) !== mine) return;
    Plotly.react(div, rw.spliceZoom(div.data, window, data.series), div.layout, rw.plotConfig);
  }

  async function init() {
    try {
      await draw(lossDiv, state.chart_keys[0]);
      const others = state.keys.filter((k) => k !== state.chart_keys[0]);
      const first = others.includes(PREFERRED_METRIC) ? PREFERRED_METRIC : others[0] || state.keys[0];
      if (first) { keySelect.value = first; await draw(metricDiv, first); }
      else Plotly.newPlot(metricDiv, [], rw.chartLayout("", false, "no metrics logged"), rw.plotConfig);
      lossDiv.on("plotly_relayout", (event) => refine(lossDiv, event));
      metricDiv.on("plotly_relayout", (event) => refine(metricDiv, event));
    } catch (err) {
      note.textContent = "Could not load the metrics (" + err.message + ").";
    }
  }

  keySelect.addEventListener("change", () => {
    if (keySelect.value) draw(metricDiv, keySelect.value).catch((err) => { note.textContent = err.message; });
  });
  init();
})();
