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
    hovermode: "x unified",
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: "#374151" },
  };
};

// The y range for series whose finite values are all one value v (a fixed learning rate),
// else null (Plotly's autorange). Plotly pads a flat line by ±1 whatever v is: a learning
// rate of 3e-4 then sat on what looked like the zero line of a −1..1 axis. Here: ±10% of v
// (±1 for 0); on a log axis (in decades) a tenth of a decade each way.
rw.constantRange = function (ys, logY) {
  let value = null;
  for (const list of ys) {
    for (const v of list) {
      if (v === null || !Number.isFinite(v)) continue;
      if (value === null) value = v;
      else if (v !== value) return null;
    }
  }
  if (value === null) return null;
  if (logY) return value > 0 ? [Math.log10(value) - 0.1, Math.log10(value) + 0.1] : null;
  const pad = value === 0 ? 1 : Math.abs(value) * 0.1;
  return [value - pad, value + pad];
};

// TensorBoard's scalar smoothing: an exponential moving average started at 0 and divided by
// the weight it has gathered (1 - w^n), so the first points are not pulled towards 0. A
// non-finite value is passed through and does not enter the average; a constant series
// stays as it is (the division would otherwise leave float noise). ``weight`` in [0, 1).
rw.emaSmooth = function (values, weight) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  const constant = finite.every((v) => v === finite[0]);
  let last = 0, count = 0;
  return values.map(function (v) {
    if (constant || v === null || !Number.isFinite(v)) return v;
    last = last * weight + (1 - weight) * v;
    count += 1;
    return weight === 1 ? last : last / (1 - Math.pow(weight, count));
  });
};

// Piecewise-linear y(x) through sorted points xs/ys; clamped to the ends. null without points.
rw.interpolate = function (xs, ys, x) {
  const n = xs.length;
  if (!n) return null;
  if (x <= xs[0]) return ys[0];
  if (x >= xs[n - 1]) return ys[n - 1];
  let lo = 0, hi = n - 1;
  while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (xs[mid] <= x) lo = mid; else hi = mid; }
  const span = xs[hi] - xs[lo];
  return span ? ys[lo] + (ys[hi] - ys[lo]) * (x - xs[lo]) / span : ys[lo];
};

// The ways a chart can lay out its x axis. ``of`` turns a trace's steps into x values
// (``ctx``: the trace's times in unix seconds, its tokens-seen curve, the run's start).
rw.xModes = {
  step: { title: "step", label: "by step", needs: null },
  tokens: { title: "tokens seen", label: "by tokens", needs: "tokens" },
  wall: { title: "wall time (UTC)", label: "by wall time", needs: "times" },
  relative: { title: "hours since start", label: "by hours", needs: "times" },
};

function xValues(mode, trace, ctx) {
  const steps = trace.x;
  if (mode === "tokens") {
    const curve = ctx.tokens || { steps: [], values: [] };
    return steps.map((s) => rw.interpolate(curve.steps, curve.values, s));
  }
  if (mode === "wall") return (trace.times || []).map((t) => (t === null ? null : t * 1000));
  if (mode === "relative") {
    const times = trace.times || [];
    const start = ctx.start !== undefined && ctx.start !== null ? ctx.start : times.find((t) => t !== null);
    return times.map((t) => (t === null ? null : (t - start) / 3600));
  }
  return steps;
}

// The step window a Plotly relayout event asks for: {since, until} for a zoom, {} for a
// reset to the whole range, null when the event did not change the x range. ``toStep``
// turns an x value of the axis (a tokens count, a date) back into a step.
rw.zoomWindow = function (event, toStep) {
  const range = event["xaxis.range"] || (event["xaxis.range[0]"] !== undefined
    ? [event["xaxis.range[0]"], event["xaxis.range[1]"]] : null);
  if (range) {
    const lo = toStep ? toStep(range[0]) : range[0], hi = toStep ? toStep(range[1]) : range[1];
    return { since: Math.floor(lo) - 1, until: Math.ceil(hi) };
  }
  return event["xaxis.autorange"] ? {} : null;
};

// Series arrive downsampled to a few thousand points; a zoom fetches the finer points of
// the visible range, and this splices them into each trace, keeping the points outside it.
// Traces hold steps in x (and, when read, unix times in ``times``).
rw.spliceZoom = function (traces, window, fineSeries) {
  return traces.map(function (t, i) {
    const fine = fineSeries[i];
    if (window.since === undefined) return { ...t, x: fine.steps, y: fine.values, times: fine.times };
    const x = [], y = [], times = [];
    const keep = (j) => { x.push(t.x[j]); y.push(t.y[j]); times.push(t.times ? t.times[j] : null); };
    t.x.forEach((step, j) => { if (step <= window.since) keep(j); });
    x.push(...fine.steps); y.push(...fine.values);
    times.push(...(fine.times || fine.steps.map(() => null)));
    t.x.forEach((step, j) => { if (step > window.until) keep(j); });
    return { ...t, x: x, y: y, times: t.times || fine.times ? times : undefined };
  });
};

// Live points ([[step, value, time?], ...], in the order they were written) merged into a
// trace by step: past its last step they are appended; a step the trace already has
// (re-logged by a resumed run, or already in the chart's first read) is replaced, and a
// step inside its range is put in its place: the chart shows what the database holds.
rw.mergePoints = function (trace, pairs) {
  if (!pairs.length) return trace;
  const xs = Array.from(trace.x || []), ys = Array.from(trace.y || []);
  const ts = trace.times ? Array.from(trace.times) : null;
  let last = xs.length ? xs[xs.length - 1] : -Infinity, appendOnly = true;
  for (const [step] of pairs) {
    if (step <= last) { appendOnly = false; break; }
    last = step;
  }
  if (appendOnly) {
    for (const p of pairs) { xs.push(p[0]); ys.push(p[1]); if (ts) ts.push(p[2] === undefined ? null : p[2]); }
    return { ...trace, x: xs, y: ys, times: ts || undefined };
  }
  const byStep = new Map(xs.map((step, i) => [step, [ys[i], ts ? ts[i] : null]]));
  for (const p of pairs) byStep.set(p[0], [p[1], p[2] === undefined ? null : p[2]]);
  const steps = Array.from(byStep.keys()).sort((a, b) => a - b);
  return { ...trace, x: steps, y: steps.map((s) => byStep.get(s)[0]),
           times: ts ? steps.map((s) => byStep.get(s)[1]) : undefined };
};

// Kept for pages that plot without rw.seriesChart: merges into trace ``index`` of ``div``.
rw.upsertPoints = function (div, index, pairs) {
  if (!pairs.length || !div.data || !div.data[index]) return;
  const merged = rw.mergePoints(div.data[index], pairs);
  Plotly.restyle(div, { x: [merged.x], y: [merged.y] }, [index]);
};

// Resolves once Plotly.js has run. The run page loads it deferred after its own scripts, so
// the first panels' series are already being read (the server's work) while the browser
// parses and runs Plotly (the client's): every deferred script has run by DOMContentLoaded.
// (readyState is already "interactive" while deferred scripts run, so it cannot tell.)
const domLoaded = new Promise(function (resolve) {
  if (document.readyState === "complete") resolve();
  else document.addEventListener("DOMContentLoaded", resolve, { once: true });
});
rw.plotlyReady = function () {
  return window.Plotly ? Promise.resolve() : domLoaded;
};

// How many points a chart of ``div`` can show: a min and a max per pixel column, within the
// server's 100..2000. Asking for no more than that lets a long series be read from coarser
// summaries (a 600-pixel panel: 1,200 points, a few times less work for the server than 2,000).
rw.chartPoints = function (div) {
  const width = div.clientWidth || 1000;
  return Math.max(100, Math.min(2000, 2 * Math.ceil(width)));
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

function hexToRgba(color, alpha) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color || "");
  if (!m) return color;
  return "rgba(" + [1, 2, 3].map((i) => parseInt(m[i], 16)).join(",") + "," + alpha + ")";
}

// One chart of server-side series, the same on the run page and the comparison page:
// ``load(window, need)`` answers {series: [...]} for a step window ({} for the whole run;
// ``need.times``: each series with its points' unix times), ``traces(data)`` makes the
// chart's traces (x: steps, y: raw values) and ``layout(data)`` its layout; ``need.points``
// is how many points the chart can show (rw.chartPoints), which ``load`` passes on. ``draw`` reads
// and plots (a newer draw or zoom wins over a slower answer), a zoom re-reads the finer
// points of the visible range (rw.spliceZoom), and ``append`` merges live points by step.
//
// What is drawn is a view of those raw traces, set with ``setView``: ``smoothing`` (the
// EMA weight, rw.emaSmooth; the raw line stays faint behind the smoothed one), ``logY``,
// and ``x`` (a key of rw.xModes). ``options.tokens()`` resolves to the tokens-seen curve
// ({steps, values}, or an array of them, one per trace) for the "tokens" axis;
// ``options.start`` is the unix time "relative" counts from (default: each trace's first).
rw.seriesChart = function (div, load, traces, layout, options) {
  options = options || {};
  // The newest draw wins over slower ones, and over any zoom asked before it; the newest
  // zoom wins over older zooms (it never cancels a draw: a new metric still gets drawn).
  let draws = 0, zooms = 0;
  let listening = false;
  let base = null;  // the raw traces: x in steps, y as stored
  let baseLayout = null;
  let pending = [];  // live points that came while the first read was under way: [traceKey, pairs]
  let tokens = null;  // the tokens-seen curve(s), read once when the axis first needs them
  const view = { smoothing: 0, logY: false, x: "step" };
  let drawnPoints = 0;  // the points the last whole-range read asked for
  const need = () => ({ times: rw.xModes[view.x].needs === "times", points: rw.chartPoints(div) });

  function contextOf(i) {
    const curve = Array.isArray(tokens) ? tokens[i] : tokens;
    return { tokens: curve, start: options.start };
  }

  // Plotly's traces for the view: per raw trace, its line (faint when smoothed) and the
  // smoothed line over it. data[2i] is always trace i's raw line.
  function shown() {
    const out = [];
    base.forEach(function (t, i) {
      const x = xValues(view.x, t, contextOf(i));
      const color = (t.line && t.line.color) || undefined;
      const hover = "%{fullData.name}: %{y:.6g} (step %{customdata})<extra></extra>";
      const raw = { ...t, x: x, customdata: t.x, hovertemplate: hover };
      delete raw.times;
      if (view.smoothing > 0) {
        raw.line = { ...(t.line || {}), color: hexToRgba(color, 0.25), width: 1 };
        raw.showlegend = false;
        raw.hoverinfo = "skip";
        delete raw.hovertemplate;
        out.push(raw);
        out.push({ ...raw, y: rw.emaSmooth(t.y, view.smoothing), line: { ...(t.line || {}), width: 2 },
                   showlegend: t.showlegend, hoverinfo: undefined,
                   hovertemplate: "%{fullData.name}: %{y:.6g} smoothed (step %{customdata})<extra></extra>",
                   meta: "smoothed" });
      } else {
        out.push(raw);
      }
    });
    return out;
  }

  function shownLayout() {
    const l = { ...baseLayout };
    const mode = rw.xModes[view.x];
    l.xaxis = { ...baseLayout.xaxis, title: { text: mode.title }, type: view.x === "wall" ? "date" : "linear" };
    l.yaxis = { ...baseLayout.yaxis, type: view.logY ? "log" : "linear" };
    const range = rw.constantRange(base.map((t) => t.y), view.logY);
    if (range) Object.assign(l.yaxis, { range: range, autorange: false });
    return l;
  }

  function render() {
    if (!base) return;
    Plotly.react(div, shown(), shownLayout(), rw.plotConfig);
  }

  // An x value of the axis back to a step, through the first trace that has points.
  function toStep(x) {
    if (view.x === "step") return x;
    const i = base.findIndex((t) => t.x.length);
    if (i < 0) return x;
    let value = x;
    if (view.x === "wall") value = typeof x === "string" ? Date.parse(x.replace(" ", "T") + "Z") : x;
    const xs = xValues(view.x, base[i], contextOf(i));
    const pairs = xs.map((v, j) => [v, base[i].x[j]]).filter((p) => p[0] !== null).sort((a, b) => a[0] - b[0]);
    return rw.interpolate(pairs.map((p) => p[0]), pairs.map((p) => p[1]), value);
  }

  async function refine(event) {
    const window = rw.zoomWindow(event, toStep);
    if (window === null || !base) return;  // not a change of the x range
    const mine = ++zooms, drawn = draws;
    const data = await load(window, need());
    if (mine !== zooms || drawn !== draws) return;
    base = rw.spliceZoom(base, window, data.series);
    // Keep the user's range: a reset (autorange) lets Plotly fit the new points.
    const keepRange = window.since !== undefined;
    const l = shownLayout();
    if (keepRange) l.xaxis = { ...l.xaxis, range: div.layout.xaxis.range, autorange: false };
    Plotly.react(div, shown(), l, rw.plotConfig);
  }

  async function ensureTokens() {
    if (view.x === "tokens" && tokens === null && options.tokens) tokens = await options.tokens();
  }

  const chart = {
    div: div,
    view: view,
    // Resolves to the data drawn, or null when a newer draw took over.
    draw: async function () {
      const mine = ++draws;
      await ensureTokens();
      const asked = need();
      const data = await load({}, asked);
      await rw.plotlyReady();
      drawnPoints = asked.points;
      if (mine !== draws) return null;
      base = traces(data).map((t, i) => ({ ...t, times: (data.series[i] || {}).times }));
      baseLayout = layout(data);
      for (const [key, pairs] of pending) chart.appendKey(key, pairs);
      pending = [];
      render();
      if (!listening) {  // Plotly adds .on() to a div once it holds a plot
        div.on("plotly_relayout", (event) => refine(event).catch(() => {}));
        listening = true;
      }
      return data;
    },
    // Live points into trace ``index`` ([[step, value, time?], ...]).
    append: function (index, pairs) {
      if (!base || !base[index] || !pairs.length) return;
      base[index] = rw.mergePoints(base[index], pairs);
      render();
    },
    // Live points of the trace named ``key``; kept until the first read lands when it is
    // still under way. Answers false when the chart has no such trace (a new line: redraw).
    appendKey: function (key, pairs) {
      if (!base) { pending.push([key, pairs]); return true; }
      const index = base.findIndex((t) => t.name === key);
      if (index < 0) return false;
      chart.append(index, pairs);
      return true;
    },
    // Changes the view ({smoothing, logY, x}); the x axis by time reads the times once.
    setView: async function (changes) {
      const timesBefore = need().times;
      Object.assign(view, changes);
      if (!base) return;
      if (need().times && !timesBefore && base.some((t) => t.x.length && !t.times)) { await chart.draw(); return; }
      await ensureTokens();
      render();
    },
    // Read again when the chart has grown wider than its points (full screen), unless zoomed.
    sharpen: function () {
      if (base && rw.chartPoints(div) > drawnPoints && !Object.keys(chart.visibleWindow()).length) {
        chart.draw().catch(() => {});
      }
    },
    // The visible step range ({since, until} as the series endpoints take them), {} for all.
    visibleWindow: function () {
      const xaxis = div.layout && div.layout.xaxis;
      if (!xaxis || xaxis.autorange || !xaxis.range || !base) return {};
      return rw.zoomWindow({ "xaxis.range": xaxis.range }, toStep);
    },
    downloadPng: function (name) {
      return Plotly.downloadImage(div, { format: "png", filename: name, width: div.clientWidth, height: div.clientHeight });
    },
  };
  return chart;
};

// The controls of one chart panel (smoothing, log y, x axis, CSV, PNG, full screen), built
// into ``bar`` for ``chart`` (an rw.seriesChart). ``csvUrl(window)`` is where the raw points
// of the visible step range download from; ``onChange(view)`` hears every change (a page
// remembers them). ``initial`` sets the view to start from.
rw.panelControls = function (bar, chart, name, csvUrl, onChange, initial) {
  const id = "c" + Math.random().toString(36).slice(2, 9);
  const view = { ...chart.view, ...(initial || {}) };
  Object.assign(chart.view, view);
  const slider = rw.el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(view.smoothing),
                                  "aria-label": "Smoothing of " + name, class: "smoothing", id: id + "s" });
  const sliderValue = rw.el("span", { class: "muted small smoothing-value" }, Number(view.smoothing).toFixed(2));
  const log = rw.el("input", { type: "checkbox", "aria-label": "Log scale of " + name, class: "log-y", id: id + "l" });
  log.checked = Boolean(view.logY);
  const xSelect = rw.el("select", { "aria-label": "X axis of " + name, class: "x-mode" });
  for (const [mode, spec] of Object.entries(rw.xModes)) {
    xSelect.appendChild(rw.el("option", { value: mode }, spec.label));
  }
  xSelect.value = view.x;
  const csv = rw.el("button", { type: "button", class: "small-button csv", title: "Raw points of the visible range as CSV" }, "CSV");
  const png = rw.el("button", { type: "button", class: "small-button png", title: "The chart as a PNG image" }, "PNG");
  const full = rw.el("button", { type: "button", class: "small-button fullscreen", title: "Full screen" }, "Full screen");
  const smoothLabel = rw.el("label", { for: id + "s", class: "small" }, "smooth");
  const logLabel = rw.el("label", { for: id + "l", class: "small" });
  logLabel.append(log, " log");
  bar.append(smoothLabel, slider, sliderValue, logLabel, xSelect, csv, png, full);

  function changed(changes) {
    chart.setView(changes).catch(() => {});
    if (onChange) onChange({ ...chart.view });
  }
  slider.addEventListener("input", function () {
    sliderValue.textContent = Number(slider.value).toFixed(2);
    changed({ smoothing: Number(slider.value) });
  });
  log.addEventListener("change", () => changed({ logY: log.checked }));
  xSelect.addEventListener("change", () => changed({ x: xSelect.value }));
  csv.addEventListener("click", function () {
    const a = rw.el("a", { href: csvUrl(chart.visibleWindow()), download: "" });
    document.body.appendChild(a);
    a.click();
    a.remove();
  });
  png.addEventListener("click", () => chart.downloadPng(name.replace(/[^A-Za-z0-9_.-]+/g, "_")));
  const panel = bar.closest(".panel") || chart.div;
  full.addEventListener("click", function () {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (panel.requestFullscreen) panel.requestFullscreen();
  });
  panel.addEventListener("fullscreenchange", () => setTimeout(function () {
    if (!chart.div.data) return;
    Plotly.Plots.resize(chart.div);
    chart.sharpen();
  }, 50));
};

// A step window as query parameters of a download URL.
rw.windowUrl = function (url, params, window) {
  const full = new URL(url, location.href);
  for (const [name, value] of params) full.searchParams.append(name, value);
  for (const [name, value] of Object.entries(window || {})) full.searchParams.set(name, value);
  return full.href;
};
