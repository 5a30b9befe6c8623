// The Fleet page's utilisation charts: one Plotly chart per host, a line per GPU (or CPU load).
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("fleet-data").textContent);
  const root = document.getElementById("fleet-charts");
  if (!root) return;
  data.forEach(function (chart) {
    const title = document.createElement("h3");
    title.textContent = chart.host;
    title.className = "small";
    const div = document.createElement("div");
    div.className = "fleet-chart";
    div.style.height = "220px";
    root.appendChild(title);
    root.appendChild(div);
    const traces = Object.keys(chart.series).map(function (label) {
      return { x: chart.times, y: chart.series[label], name: label, mode: "lines", type: "scatter" };
    });
    const layout = rw.chartLayout("utilisation", traces.length > 1);
    layout.xaxis.title.text = "time (UTC)";
    layout.xaxis.type = "date";
    layout.yaxis.range = [0, 1.05];
    layout.yaxis.tickformat = ".0%";
    Plotly.newPlot(div, traces, layout, rw.plotConfig);
  });
})();
