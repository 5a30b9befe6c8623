// The run page: loads the charts' series, then follows the run (rw.live: SSE, or polling) until it is final.
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

  const seriesUrl = lossDiv.dataset.seriesUrl;
  let lossCursor = -1;  // the stream's point cursor: points written after the loss chart's first read
  const lossChart = rw.seriesChart(
    lossDiv,
    (window) => rw.fetchSeries(seriesUrl, lossKeys.map((key) => ["key", key]), window),
    (data) => data.series.map((s) => trace(s, colors[s.key])),
    (data) => {
      const empty = !data.series.some((s) => s.steps.length);
      const emptyText = empty ? (state.is_final ? "no points were logged" : "waiting for the first points…") : "";
      return layout("loss", true, emptyText);
    },
  );
  const metricChart = rw.seriesChart(
    metricDiv,
    (window) => rw.fetchSeries(seriesUrl, [["key", metricKey]], window),
    (data) => [trace(data.series[0], "#059669")],
    () => layout(metricKey),
  );

  function fillKeySelect(keys) {
    const others = keys.filter((k) => !lossKeys.includes(k));
    if (!others.length) return;
    const known = new Set(Array.from(keySelect.options).map((o) => o.value));
    if (known.has("")) keySelect.replaceChildren();
    for (const key of others) {
      if (!known.has(key)) keySelect.appendChild(rw.el("option", { value: key }, key));
    }
  }

  let drawnMetric = "";  // the key the metric chart shows now (a newer choice may still be loading)
  let pendingMetric = [];  // live points of metricKey that came while its series was loading
  async function showMetric(key) {
    metricKey = key;
    pendingMetric = [];
    if (!key) return;
    const data = await metricChart.draw();
    if (data === null) return;  // the user (or a new key) asked for another metric meanwhile
    drawnMetric = key;
    // Written after the stream's cursor, perhaps before this read: merged by step, none lost.
    metricChart.append(0, pendingMetric);
    pendingMetric = [];
  }

  async function init() {
    try {
      const data = await lossChart.draw();
      lossCursor = data.cursor;
      fillKeySelect(data.keys);
      const preferred = data.keys.includes(PREFERRED_METRIC) ? PREFERRED_METRIC : keySelect.value;
      if (preferred) { keySelect.value = preferred; await showMetric(preferred); }
      else Plotly.newPlot(metricDiv, [], layout("", false, state.is_final ? "no other metrics" : "no other metrics yet"), plotConfig);
    } catch (err) {
      note.textContent = "Could not load the metrics (" + err.message + ").";
    }
    if (!state.is_final) follow();
  }

  // Points come in the order they were written (a late val/loss for an old step, a step
  // re-logged after a resume); each is merged into its trace by step.
  function appendPoints(points) {
    let lossGrew = false;
    for (const [key, pairs] of Object.entries(points)) {
      const li = lossKeys.indexOf(key);
      if (li >= 0) { lossChart.append(li, pairs); lossGrew = true; }
      if (key === drawnMetric && key === metricKey) metricChart.append(0, pairs);
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
    if (cancel && update.cancel_requested) {
      // A running trainer saves a checkpoint before it stops (up to train.cancel_grace_s): say so.
      cancel.disabled = true;
      cancel.textContent = update.status === "running" ? "Saving checkpoint…" : "Cancelling…";
    }
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

  function follow() {
    // Where the stream starts; on a reconnect EventSource sends the last update's id
    // (Last-Event-ID), which the server prefers to these, so nothing is missed or sent twice.
    const streamUrl = new URL(lossDiv.dataset.streamUrl, location.href);
    streamUrl.searchParams.set("after", lossCursor);
    streamUrl.searchParams.set("log_after", logAfter);
    rw.live({
      stream: streamUrl.href,
      // The polling fallback asks the same view for what came after the last update.
      poll: function (cursor) {
        const url = new URL(streamUrl);
        url.searchParams.set("poll", "1");
        if (cursor) url.searchParams.set("cursor", cursor);
        return url.href;
      },
      every: 1000,
      onUpdate: function (update) {
        applyState(update);
        appendPoints(update.points || {});
        appendLogs(update.logs || []);
      },
      onEnd: function (data) {
        applyState(data);
        durationTicking = false;
        refreshEvalPanel();  // the run's last checkpoint can now be evaluated
      },
      onTrouble: function (lost) {
        if (lost) note.textContent = "connection lost; reconnecting…";
        else if (note.textContent.startsWith("connection")) note.textContent = "";
      },
    });
  }

  keySelect.addEventListener("change", () => { metricChosen = true; showMetric(keySelect.value); });
  durationEl.textContent = rw.duration(duration);
  durationTicking = state.status === "running" || state.status === "starting";
  setInterval(function () {
    if (durationTicking && duration !== null) { duration += 1; durationEl.textContent = rw.duration(duration); }
  }, 1000);
  init();
})();
