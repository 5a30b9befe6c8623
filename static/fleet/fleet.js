// The Fleet page: one utilisation chart per host (a line per GPU, or CPU load), and the hosts and
// queue sections, kept current with rw.live: the fleet's SSE stream (a new state each time a host
// beats, registers or leaves), or polling the same state where a stream cannot be held.
"use strict";
(function () {
  const script = document.getElementById("fleet-script");
  const root = document.getElementById("fleet-charts");
  const empty = document.getElementById("fleet-charts-empty");
  const charts = new Map();  // host name -> its chart's div

  function chartFor(host) {
    let div = charts.get(host);
    if (div) return div;
    const box = document.createElement("div");
    box.dataset.host = host;
    const title = document.createElement("h3");
    title.textContent = host;
    title.className = "small";
    div = document.createElement("div");
    div.className = "fleet-chart";
    div.style.height = "220px";
    box.appendChild(title);
    box.appendChild(div);
    root.appendChild(box);
    charts.set(host, div);
    return div;
  }

  function drawCharts(data) {
    empty.hidden = data.length > 0;
    if (!window.Plotly) return;
    const seen = new Set();
    data.forEach(function (chart) {
      seen.add(chart.host);
      const div = chartFor(chart.host);
      const traces = Object.keys(chart.series).map(function (label) {
        return { x: chart.times, y: chart.series[label], name: label, mode: "lines", type: "scatter" };
      });
      const layout = rw.chartLayout("utilisation", traces.length > 1);
      layout.xaxis.title.text = "time (UTC)";
      layout.xaxis.type = "date";
      layout.yaxis.range = [0, 1.05];
      layout.yaxis.tickformat = ".0%";
      Plotly.react(div, traces, layout, rw.plotConfig);
    });
    for (const [host, div] of charts) {  // a host with no samples left in the window
      if (!seen.has(host)) {
        Plotly.purge(div);
        div.parentNode.remove();
        charts.delete(host);
      }
    }
  }

  function swap(id, html) {
    const current = document.getElementById(id);
    if (current && current.outerHTML !== html) current.outerHTML = html;
  }

  drawCharts(JSON.parse(document.getElementById("fleet-data").textContent));
  rw.live({
    stream: script.dataset.streamUrl,
    poll: () => script.dataset.pollUrl,
    every: 5000,
    unpack: (body) => ({ updates: [{ data: body }], end: null }),
    onUpdate: function (state) {
      swap("fleet-hosts", state.hosts_html.trim());
      swap("fleet-queue", state.queue_html.trim());
      drawCharts(state.charts);
    },
  });
})();
