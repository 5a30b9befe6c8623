// Comparison report charts: one bar chart per task (score ± stderr) and score vs training step.
// Reads its data from <script id="report-data"> so the same file works in the page and in the HTML export
// (which inlines it after js/charts.js: the step charts look like the run pages' charts).
(function () {
  "use strict";
  const node = document.getElementById("report-data");
  if (!node || typeof Plotly === "undefined") return;
  const data = JSON.parse(node.textContent);
  const config = rw.plotConfig;
  const base = { margin: { l: 56, r: 16, t: 40, b: 64 }, font: { size: 12 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff" };

  function box(parent, id) {
    const div = document.createElement("div");
    div.className = "chart";
    div.id = id;
    parent.appendChild(div);
    return div;
  }

  const bars = document.getElementById("bar-charts");
  if (bars) {
    data.bars.forEach(function (chart, i) {
      const trace = {
        type: "bar",
        x: chart.labels,
        y: chart.values,
        error_y: { type: "data", array: chart.stderrs.map(function (s) { return s === null ? 0 : s; }), visible: true },
        marker: { color: chart.best.map(function (b) { return b ? "#059669" : "#60a5fa"; }) },
        hovertemplate: "%{x}<br>%{y:.4f}<extra></extra>",
      };
      const title = chart.task + " — " + chart.metric + (chart.higher_is_better ? " (higher is better)" : " (lower is better)");
      Plotly.newPlot(box(bars, "bar-" + i), [trace], Object.assign({}, base, { title: { text: title, font: { size: 13 } } }), config);
    });
  }

  const steps = document.getElementById("step-charts");
  if (steps) {
    const byTask = {};
    data.steps.forEach(function (s) { (byTask[s.task + "|" + s.metric] = byTask[s.task + "|" + s.metric] || []).push(s); });
    Object.keys(byTask).forEach(function (key, i) {
      const series = byTask[key];
      const traces = series.map(function (s) {
        return {
          type: "scatter", mode: "lines+markers", name: s.run, x: s.steps, y: s.values,
          error_y: { type: "data", array: s.stderrs.map(function (e) { return e === null ? 0 : e; }), visible: true },
        };
      });
      const layout = rw.chartLayout(series[0].metric, true);
      layout.title = { text: series[0].task + " — " + series[0].metric, font: { size: 13 } };
      layout.margin = { l: 56, r: 16, t: 40, b: 48 };
      delete layout.legend;  // the title holds the top: Plotly's legend at the side
      Plotly.newPlot(box(steps, "step-" + i), traces, layout, config);
    });
  }
})();
