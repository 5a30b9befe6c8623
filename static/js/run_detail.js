// The run page: loads the charts' series, then follows the run over SSE until it is final.
"use strict";
(function () {
  const state = JSON.parse(document.getElementById("stream-state").textContent);
  const lossDiv = document.getElementById("loss-chart");
  const metricDiv = document.getElementById("metric-chart");
  const keySelect = document.getElementById("metric-key");
  const logBox = document.getElementById("run-log");
  const statusBadge = document.getElementById("run-status");
  const stepEl = document.getElementById("run-step");
  const lossEl = document.getElementById("run-loss");
  const durationEl = document.getElementById("run-duration");
  const note = document.getElementById("chart-note");
  const lossKeys = state.chart_keys;
  let metricKey = "";
  let metricChosen = false;  // once the user picks a metric, new keys never replace it
  const PREFERRED_METRIC = "train/lr";
  let logAfter = state.log_after;  // the id of the last log row shown
  let duration = durationEl.dataset.duration === "" ? null : Number(durationEl.dataset.duration);
  let durationTicking = false;

  const plotConfig = rw.plotConfig;
  const layout = rw.chartLayout;
  const colors = { "train/loss": "#2563eb", "val/loss": "#f97316" };

  function trace(series, color) {
    return { x: series.steps, y: series.values, name: series.key, mode: "lines", connectgaps: false,
             line: { width: 2, color: color } };
  }

  async function loadSeries(keys, window) {
    const url = new URL(lossDiv.dataset.seriesUrl, location.href);
    for (const key of keys) url.searchParams.append("key", key);
    for (const [name, value] of Object.entries(window || {})) url.searchParams.set(name, value);
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function fillKeySelect(keys) {
    const others = keys.filter((k) => !lossKeys.includes(k));
    if (!others.length) return;
    const known = new Set(Array.from(keySelect.options).map((o) => o.value));
    if (known.has("")) keySelect.replaceChildren();
    for (const key of others) {
      if (!known.has(key)) keySelect.appendChild(rw.el("option", { value: key }, key));
    }
  }

  let metricRequest = 0;
  let drawnMetric = "";  // the key the metric chart shows now (a newer choice may still be loading)
  let pendingMetric = [];  // live points of metricKey that came while its series was loading
  async function showMetric(key) {
    metricKey = key;
    pendingMetric = [];
    if (!key) return;
    const mine = ++metricRequest;
    const data = await loadSeries([key]);
    if (mine !== metricRequest) return;  // the user (or a new key) asked for another metric meanwhile
    Plotly.react(metricDiv, [trace(data.series[0], "#059669")], layout(key), plotConfig);
    drawnMetric = key;
    // Written after the stream's cursor, perhaps before this read: merged by step, none lost.
    rw.upsertPoints(metricDiv, 0, pendingMetric);
    pendingMetric = [];
  }

  async function init() {
    let cursor = -1;  // the stream's point cursor: points written after the charts' first read
    try {
      const data = await loadSeries(lossKeys);
      cursor = data.cursor;
      const empty = !data.series.some((s) => s.steps.length);
      const emptyText = empty ? (state.is_final ? "no points were logged" : "waiting for the first points…") : "";
      Plotly.newPlot(lossDiv, data.series.map((s) => trace(s, colors[s.key])), layout("loss", true, emptyText), plotConfig);
      fillKeySelect(data.keys);
      const preferred = data.keys.includes(PREFERRED_METRIC) ? PREFERRED_METRIC : keySelect.value;
      if (preferred) { keySelect.value = preferred; await showMetric(preferred); }
      else Plotly.newPlot(metricDiv, [], layout("", false, state.is_final ? "no other metrics" : "no other metrics yet"), plotConfig);
      // Plotly adds .on() to a div once it holds a plot.
      lossDiv.on("plotly_relayout", (event) => refine(lossDiv, event));
      metricDiv.on("plotly_relayout", (event) => refine(metricDiv, event));
    } catch (err) {
      note.textContent = "Could not load the metrics (" + err.message + ").";
    }
    if (!state.is_final) follow(cursor);
  }

  // Points come in the order they were written (a late val/loss for an old step, a step
  // re-logged after a resume); each is merged into its trace by step.
  function appendPoints(points) {
    let lossGrew = false;
    for (const [key, pairs] of Object.entries(points)) {
      const li = lossKeys.indexOf(key);
      if (li >= 0) { rw.upsertPoints(lossDiv, li, pairs); lossGrew = true; }
      if (key === drawnMetric && key === metricKey) rw.upsertPoints(metricDiv, 0, pairs);
      else if (key === metricKey) pendingMetric.push(...pairs);
      if (li < 0) {
        fillKeySelect([key]);
        if (!metricChosen && (!metricKey || (key === PREFERRED_METRIC && metricKey !== key))) {
          keySelect.value = key;
          showMetric(key);
        }
      }
    }
    if (lossGrew && lossDiv.layout && (lossDiv.layout.annotations || []).length) {
      Plotly.relayout(lossDiv, { annotations: [] });
    }
  }

  function appendLogs(logs) {
    for (const entry of logs) {
      if (entry.id <= logAfter) continue;
      logAfter = entry.id;
      logBox.appendChild(rw.el("span", { class: "log-" + entry.level }, entry.message));
      logBox.appendChild(document.createTextNode("\n"));
    }
    while (logBox.childNodes.length > 400) logBox.removeChild(logBox.firstChild);
    if (logs.length) logBox.scrollTop = logBox.scrollHeight;
  }

  function applyState(update) {
    if (update.status) {
      statusBadge.textContent = update.status;
      statusBadge.className = "badge status-" + update.status;
    }
    if (update.step !== undefined) stepEl.textContent = update.step;
    if (update.last_loss !== undefined) lossEl.textContent = rw.loss(update.last_loss);
    if (update.duration_s !== undefined) { duration = update.duration_s; durationEl.textContent = rw.duration(duration); }
    if (update.error) {
      const box = document.getElementById("run-error");
      document.getElementById("run-error-text").textContent = update.error;
      document.getElementById("run-error-title").textContent =
        update.status === "failed" ? "The run failed" : "Why it stopped";
      box.classList.toggle("info", update.status !== "failed");
      box.hidden = false;
    }
    const cancel = document.getElementById("cancel-button");
    if (cancel && update.cancel_requested) { cancel.disabled = true; cancel.textContent = "Cancelling…"; }
    if (cancel && ["completed", "failed", "cancelled", "lost"].includes(update.status)) {
      document.getElementById("cancel-form").remove();
    }
    durationTicking = update.status === "running" || update.status === "starting";
  }

  async function refreshEvalPanel() {
    const panel = document.getElementById("run-evals");
    if (!panel || !panel.dataset.refreshUrl) return;
    try {
      const response = await fetch(panel.dataset.refreshUrl, { credentials: "same-origin" });
      if (response.ok) panel.outerHTML = await response.text();
    } catch (err) {
      // The panel keeps what it showed; a reload brings the rest.
    }
  }

  function follow(after) {
    // Where the stream starts; on a reconnect EventSource sends the last update's id
    // (Last-Event-ID), which the server prefers to these, so nothing is missed or sent twice.
    const url = new URL(lossDiv.dataset.streamUrl, location.href);
    url.searchParams.set("after", after);
    url.searchParams.set("log_after", logAfter);
    const source = new EventSource(url);
    source.addEventListener("update", function (event) {
      const update = JSON.parse(event.data);
      applyState(update);
      appendPoints(update.points || {});
      appendLogs(update.logs || []);
    });
    source.addEventListener("end", function (event) {
      source.close();
      applyState(JSON.parse(event.data));
      durationTicking = false;
      refreshEvalPanel();  // the run's last checkpoint can now be evaluated
    });
    source.onerror = function () {
      // EventSource reconnects on its own, resuming from the last update's id.
      note.textContent = "connection lost; reconnecting…";
    };
    source.onopen = function () { if (note.textContent.startsWith("connection")) note.textContent = ""; };
  }

  // A zoom asks the server for the finer points of the visible range (rw.spliceZoom).
  const zoomRequests = new WeakMap();
  async function refine(div, event) {
    if (!div.data || !div.data.length) return;
    const window = rw.zoomWindow(event);
    if (window === null) return;  // not a change of the step range
    const mine = (zoomRequests.get(div) || 0) + 1;
    zoomRequests.set(div, mine);
    const data = await loadSeries(div.data.map((t) => t.name), window);
    if (zoomRequests.get(div) !== mine) return;
    Plotly.react(div, rw.spliceZoom(div.data, window, data.series), div.layout, plotConfig);
  }

  keySelect.addEventListener("change", () => { metricChosen = true; showMetric(keySelect.value); });
  durationEl.textContent = rw.duration(duration);
  durationTicking = state.status === "running" || state.status === "starting";
  setInterval(function () {
    if (durationTicking && duration !== null) { duration += 1; durationEl.textContent = rw.duration(duration); }
  }, 1000);
  init();
})();
