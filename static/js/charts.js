// Plotly helpers shared by the run page and the comparison page.
"use strict";
window.rw = window.rw || {};

rw.plotConfig = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

rw.chartLayout = function (yTitle, showLegend, emptyText) {
  return {
    annotations: emptyText ? [{ text: emptyText, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
                                font: { size: 14, color: "#9ca3af" } }] : [],
    margin: { l: 56, r: 16, t: 8, b: 40 },
    xaxis: { title: { text: "step" }, zeroline: false, gridcolor: "#eef0f4" },
    // automargin: long tick labels (a learning rate of 0.0015) would run into the axis title.
    yaxis: { title: { text: yTitle }, zeroline: false, gridcolor: "#eef0f4", automargin: true },
    showlegend: Boolean(showLegend),
    legend: { orientation: "h", x: 0, y: 1.12 },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: "#374151" },
  };
};

// The step window a Plotly relayout event asks for: {since, until} for a zoom, {} for a
// reset to the whole range, null when the event did not change the step range.
rw.zoomWindow = function (event) {
  const range = event["xaxis.range"] || (event["xaxis.range[0]"] !== undefined
    ? [event["xaxis.range[0]"], event["xaxis.range[1]"]] : null);
  if (range) return { since: Math.floor(range[0]) - 1, until: Math.ceil(range[1]) };
  return event["xaxis.autorange"] ? {} : null;
};

// Series arrive downsampled to a few thousand points; a zoom fetches the finer points of
// the visible range, and this splices them into each trace, keeping the points outside it.
rw.spliceZoom = function (traces, window, fineSeries) {
  return traces.map(function (t, i) {
    const fine = fineSeries[i];
    if (window.since === undefined) return { ...t, x: fine.steps, y: fine.values };
    const x = [], y = [];
    t.x.forEach((step, j) => { if (step <= window.since) { x.push(step); y.push(t.y[j]); } });
    x.push(...fine.steps); y.push(...fine.values);
    t.x.forEach((step, j) => { if (step > window.until) { x.push(step); y.push(t.y[j]); } });
    return { ...t, x: x, y: y };
  });
};

// Live points ([[step, value], ...], in the order they were written) into trace ``index``
// of a chart. Past the trace's last step they are appended; a step the trace already has
// (re-logged by a resumed run, or already in the chart's first read) is replaced, and a
// step inside its range is put in its place: the chart shows what the database holds.
rw.upsertPoints = function (div, index, pairs) {
  if (!pairs.length || !div.data || !div.data[index]) return;
  const xs = Array.from(div.data[index].x || []), ys = Array.from(div.data[index].y || []);
  let last = xs.length ? xs[xs.length - 1] : -Infinity, appendOnly = true;
  for (const [step] of pairs) {
    if (step <= last) { appendOnly = false; break; }
    last = step;
  }
  if (appendOnly) {
    Plotly.extendTraces(div, { x: [pairs.map((p) => p[0])], y: [pairs.map((p) => p[1])] }, [index]);
    return;
  }
  const byStep = new Map(xs.map((step, i) => [step, ys[i]]));
  for (const [step, value] of pairs) byStep.set(step, value);
  const steps = Array.from(byStep.keys()).sort((a, b) => a - b);
  Plotly.restyle(div, { x: [steps], y: [steps.map((step) => byStep.get(step))] }, [index]);
};

// Reads series JSON from ``url`` with query ``params`` ([[name, value], ...]) and a step
// ``window`` ({} or {since, until}); throws on an HTTP error.
rw.fetchSeries = async function (url, params, window) {
  const full = new URL(url, location.href);
  for (const [name, value] of params) full.searchParams.append(name, value);
  for (const [name, value] of Object.entries(window || {})) full.searchParams.set(name, value);
  const response = await fetch(full, { credentials: "same-origin" });
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
};

// One chart of server-side series, the same on the run page and the comparison page:
// ``load(window)`` answers {series: [...]} for a step window ({} for the whole run),
// ``traces(data)`` makes the chart's traces and ``layout(data)`` its layout. ``draw`` reads
// and plots (a newer draw or zoom wins over a slower answer), a zoom re-reads the finer
// points of the visible range (rw.spliceZoom), and ``append`` merges live points by step.
rw.seriesChart = function (div, load, traces, layout) {
  // The newest draw wins over slower ones, and over any zoom asked before it; the newest
  // zoom wins over older zooms (it never cancels a draw: a new metric still gets drawn).
  let draws = 0, zooms = 0;
  let listening = false;
  async function refine(event) {
    const window = rw.zoomWindow(event);
    if (window === null || !div.data || !div.data.length) return;  // not a change of the step range
    const mine = ++zooms, drawn = draws;
    const data = await load(window);
    if (mine !== zooms || drawn !== draws) return;
    Plotly.react(div, rw.spliceZoom(div.data, window, data.series), div.layout, rw.plotConfig);
  }
  return {
    div: div,
    // Resolves to the data drawn, or null when a newer draw took over.
    draw: async function () {
      const mine = ++draws;
      const data = await load({});
      if (mine !== draws) return null;
      Plotly.react(div, traces(data), layout(data), rw.plotConfig);
      if (!listening) {  // Plotly adds .on() to a div once it holds a plot
        div.on("plotly_relayout", (event) => refine(event).catch(() => {}));
        listening = true;
      }
      return data;
    },
    append: function (index, pairs) { rw.upsertPoints(div, index, pairs); },
  };
};
