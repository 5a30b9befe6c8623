// The run page: a panel per metric, laid out by key prefix, drawn when it comes into view;
// then follows the run (rw.live: SSE, or polling) until it is final.
"use strict";
(function () {
  const state = JSON.parse(document.getElementById("stream-state").textContent);
  const chartsBox = document.getElementById("run-charts");
  const groupsBox = document.getElementById("chart-groups");
  const logBox = document.getElementById("run-log");
  const statusBadge = document.getElementById("run-status");
  const stepEl = document.getElementById("run-step");
  const lossEl = document.getElementById("run-loss");
  const durationEl = document.getElementById("run-duration");
  const note = document.getElementById("chart-note");
  const seriesUrl = chartsBox.dataset.seriesUrl;
  const csvUrl = chartsBox.dataset.csvUrl;
  let logAfter = state.log_after;  // the id of the last log row shown
  let duration = durationEl.dataset.duration === "" ? null : Number(durationEl.dataset.duration);
  let durationTicking = false;
  let step = Number(stepEl.textContent) || 0;
  let cursor = -1;  // the stream's point cursor: points written after the first read of the keys

  // Panels are grouped by the key's first part; a key of three parts or more shares a panel
  // with its siblings (system/gpu_util/rank0 and rank1: one line per rank).
  const GROUPS = ["train", "val", "perf", "system", "eval", "moe", "other"];
  const FOLDED_BY_DEFAULT = ["moe"];
  const FIRST_PANELS = ["train/loss", "val/loss"];
  const palette = ["#2563eb", "#f97316", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"];
  const panelOf = (key) => { const parts = key.split("/"); return parts.length >= 3 ? parts.slice(0, 2).join("/") : key; };
  const groupOf = (key) => { const first = key.split("/")[0]; return key.includes("/") && GROUPS.includes(first) ? first : "other"; };
  const domId = (panel) => "chart-" + panel.replace(/[^A-Za-z0-9_-]+/g, "-");

  // What this project's pages remember: panel order, hidden panels, folded groups, each panel's view.
  const storeKey = "runwright.panels.project" + state.project_id;
  const saved = (function () {
    try { return JSON.parse(localStorage.getItem(storeKey)) || {}; } catch (err) { return {}; }
  })();
  saved.order = saved.order || []; saved.hidden = saved.hidden || []; saved.views = saved.views || {};
  saved.folded = saved.folded || {};
  function remember() {
    try { localStorage.setItem(storeKey, JSON.stringify(saved)); } catch (err) { /* private mode: not kept */ }
  }

  const keyOrder = new Intl.Collator(undefined, { numeric: true });  // rank2 before rank10
  const panels = new Map();  // panel id → {id, group, keys, node, chart, status: idle|loading|drawn}
  const groups = new Map();  // group → {details, grid, count, hiddenBar}

  function rank(id) {
    const at = saved.order.indexOf(id);
    if (at >= 0) return [0, at, id];
    const first = FIRST_PANELS.indexOf(id);
    return [1, first >= 0 ? first : FIRST_PANELS.length, id];
  }
  function compareRanks(a, b) {
    const ra = rank(a), rb = rank(b);
    for (let i = 0; i < 3; i++) if (ra[i] !== rb[i]) return ra[i] < rb[i] ? -1 : 1;
    return 0;
  }

  function groupBox(name) {
    if (groups.has(name)) return groups.get(name);
    const details = rw.el("details", { class: "chart-group", "data-group": name });
    details.open = saved.folded[name] === undefined ? !FOLDED_BY_DEFAULT.includes(name) : !saved.folded[name];
    const summary = rw.el("summary");
    const title = rw.el("span", { class: "group-title" }, name);
    const count = rw.el("span", { class: "muted small group-count" });
    const restore = rw.el("button", { type: "button", class: "small-button show-hidden", hidden: "" });
    summary.append(title, count, restore);
    const grid = rw.el("div", { class: "panel-grid" });
    details.append(summary, grid);
    details.addEventListener("toggle", function () { saved.folded[name] = !details.open; remember(); });
    restore.addEventListener("click", function (event) {
      event.preventDefault();
      saved.hidden = saved.hidden.filter((id) => !(panels.get(id) && panels.get(id).group === name));
      remember();
      layoutGroup(name);
    });
    const box = { details, grid, count, restore };
    groups.set(name, box);
    // Groups in their fixed order, whatever order their first keys came in.
    const after = GROUPS.slice(GROUPS.indexOf(name) + 1).map((g) => groups.get(g)).find(Boolean);
    groupsBox.insertBefore(details, after ? after.details : null);
    return box;
  }

  function layoutGroup(name) {
    const box = groupBox(name);
    const ids = Array.from(panels.values()).filter((p) => p.group === name).map((p) => p.id).sort(compareRanks);
    let hidden = 0;
    for (const id of ids) {
      const panel = panels.get(id);
      panel.node.hidden = saved.hidden.includes(id);
      if (panel.node.hidden) hidden += 1;
      box.grid.appendChild(panel.node);  // moves it to its place
    }
    box.count.textContent = ids.length + (ids.length === 1 ? " chart" : " charts");
    box.restore.hidden = !hidden;
    box.restore.textContent = "show " + hidden + " hidden";
  }

  function move(panel, by) {
    const ids = Array.from(panels.values()).filter((p) => p.group === panel.group).map((p) => p.id).sort(compareRanks);
    const at = ids.indexOf(panel.id), to = at + by;
    if (to < 0 || to >= ids.length) return;
    [ids[at], ids[to]] = [ids[to], ids[at]];
    saved.order = saved.order.filter((id) => !ids.includes(id)).concat(ids);
    remember();
    layoutGroup(panel.group);
  }

  function emptyText(panel) {
    if (panel.id !== "train/loss") return "no points yet";
    return state.is_final ? "no points were logged" : "waiting for the first points…";
  }

  // A panel is a placeholder of a built panel's height until it comes near the screen
  // (the observer below): then its head, controls and chart are made. A 200-key run's
  // hundred panels, built at once, cost the first screen 200 ms of script and layout.
  function makePanel(id) {
    const panel = { id: id, group: groupOf(id), keys: [], status: "idle", built: false };
    panel.node = rw.el("section", { class: "card chart-card panel unbuilt", "data-panel": id });
    panels.set(id, panel);
    observer.observe(panel.node);
    return panel;
  }

  function buildPanel(panel) {
    if (panel.built) return;
    panel.built = true;
    const id = panel.id, node = panel.node;
    const head = rw.el("div", { class: "panel-head" });
    const title = rw.el("h3", { class: "panel-title", title: id }, id);
    const tools = rw.el("div", { class: "panel-tools" });
    const left = rw.el("button", { type: "button", class: "small-button", title: "Move left", "aria-label": "Move " + id + " left" }, "←");
    const right = rw.el("button", { type: "button", class: "small-button", title: "Move right", "aria-label": "Move " + id + " right" }, "→");
    const hide = rw.el("button", { type: "button", class: "small-button", title: "Hide", "aria-label": "Hide " + id }, "×");
    tools.append(left, right, hide);
    head.append(title, tools);
    const bar = rw.el("div", { class: "panel-controls" });
    const div = rw.el("div", { class: "chart", id: domId(id) });
    node.append(head, bar, div);
    node.classList.remove("unbuilt");
    panel.chart = rw.seriesChart(
      div,
      (window, need) => prefetched(panel, window, need) ||
        rw.fetchSeries(seriesUrl, [...panel.keys.map((k) => ["key", k]), ["points", need.points], ...(need.times ? [["times", "1"]] : [])], window),
      (data) => data.series.map((s, i) => ({
        x: s.steps, y: s.values, name: s.key, mode: "lines", connectgaps: false,
        line: { width: 2, color: palette[i % palette.length] },
      })),
      (data) => {
        const empty = !data.series.some((s) => s.steps.length);
        return rw.chartLayout(panel.keys.length === 1 ? id : "", panel.keys.length > 1, empty ? emptyText(panel) : "");
      },
      { tokens: tokensCurve, start: state.started_at },
    );
    Object.assign(panel.chart.view, saved.views[id] || {});
    rw.panelControls(bar, panel.chart, id,
      (window) => rw.windowUrl(csvUrl, panel.keys.map((k) => ["key", k]), window),
      (view) => { saved.views[id] = view; remember(); }, saved.views[id]);
    left.addEventListener("click", () => move(panel, -1));
    right.addEventListener("click", () => move(panel, 1));
    hide.addEventListener("click", function () {
      if (!saved.hidden.includes(id)) saved.hidden.push(id);
      remember();
      layoutGroup(panel.group);
    });
  }

  // The tokens-seen curve, read once, for panels whose x axis is "tokens seen".
  let tokensPromise = null;
  function tokensCurve() {
    if (!tokensPromise) {
      tokensPromise = rw.fetchSeries(seriesUrl, [["key", "perf/tokens_seen"]], {})
        .then((data) => ({ steps: data.series[0].steps, values: data.series[0].values }));
    }
    return tokensPromise;
  }

  async function drawPanel(panel) {
    panel.status = "loading";
    try {
      await panel.chart.draw();
      panel.status = "drawn";
    } catch (err) {
      panel.status = "idle";
      note.textContent = "Could not load " + panel.id + " (" + err.message + ").";
    }
  }

  let firstScreen = Promise.resolve();  // the first screen's draws (drawFirstScreen)

  // Panels are drawn once they are near the screen (a folded group's are not). Those on the
  // screen first: the ones just below it are read and drawn once they are, so on a busy
  // machine the server and the browser work on what is seen before what may be scrolled to.
  const observer = new IntersectionObserver(function (entries) {
    const onScreen = [], near = [];
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const panel = panels.get(entry.target.dataset.panel);
      if (!panel) continue;
      buildPanel(panel);
      if (panel.status !== "idle") continue;
      const box = entry.boundingClientRect;
      (box.top < window.innerHeight && box.bottom > 0 ? onScreen : near).push(panel);
      panel.status = "loading";  // taken: a later callback leaves it alone
    }
    Promise.all([firstScreen, ...onScreen.map(drawPanel)]).then(() => near.forEach(drawPanel));
  }, { rootMargin: "300px 0px" });

  // Adds keys to their panels (new panels, new lines of a drawn panel); answers the panels changed.
  function addKeys(keys) {
    const touched = new Set();
    for (const key of keys) {
      const id = panelOf(key);
      const panel = panels.get(id) || makePanel(id);
      if (!panel.keys.includes(key)) {
        panel.keys.push(key);
        touched.add(panel);
      }
    }
    // Sorted once per panel with one collator: localeCompare with options builds a collator
    // per call, and sorting after each key cost a 200-key page 150 ms before its first read.
    for (const panel of touched) panel.keys.sort(keyOrder.compare);
    for (const group of new Set(Array.from(touched).map((p) => p.group))) layoutGroup(group);
    return touched;
  }

  function init() {
    // The page came with its keys and the stream's cursor: panels are laid out at once.
    cursor = state.cursor;
    const empty = document.getElementById("charts-empty");
    if (empty) empty.remove();
    addKeys(["train/loss", ...state.keys]);
    drawFirstScreen();
    if (!state.is_final) follow();
  }

  // The panels on the first screen start reading their series now, while the browser still
  // parses and runs Plotly.js (the script after this one): the observer's first callback
  // comes only after every deferred script has run, and the server's reads then waited on
  // the browser's work instead of overlapping it (300-400 ms of a 1.2 s first screen).
  // The panels just below the screen wait for these (as for the observer's own on-screen ones).
  function drawFirstScreen() {
    const shown = [];
    for (const panel of panels.values()) {
      if (panel.node.hidden || !panel.node.closest("details").open) continue;
      const box = panel.node.getBoundingClientRect();
      if (box.top < window.innerHeight && box.bottom > 0) shown.push(panel);
    }
    shown.forEach(buildPanel);
    readTogether(shown);
    firstScreen = Promise.all(shown.map(drawPanel));
  }

  // The first screen's panels read in one request where they can: the server answers a
  // page's requests one at a time (Django runs sync views on one thread under ASGI), and
  // each request's own work (session, run, cursor) came on top of its series' (a fifth of
  // four single-key reads). Panels of the same width with at most MAX_KEYS keys in all, on
  // the step axis; the others read alone. Each panel takes its series once (``prefetched``).
  const MAX_KEYS = 32;  // webapp.runs.views.MAX_KEYS_PER_CHART
  const together = new Map();  // panel id → {points, data: Promise of the shared answer}
  function readTogether(shown) {
    const batch = [];
    let points = null, keys = 0;
    for (const panel of shown) {
      const need = { points: rw.chartPoints(panel.chart.div) };
      if (rw.xModes[panel.chart.view.x].needs) continue;  // by time or tokens: its own read
      if (points !== null && need.points !== points) continue;
      if (keys + panel.keys.length > MAX_KEYS) continue;
      points = need.points;
      keys += panel.keys.length;
      batch.push(panel);
    }
    if (batch.length < 2) return;
    const data = rw.fetchSeries(seriesUrl, [...batch.flatMap((p) => p.keys.map((k) => ["key", k])), ["points", points]], {});
    for (const panel of batch) together.set(panel.id, { points: points, data: data });
  }
  function prefetched(panel, window, need) {
    const read = together.get(panel.id);
    together.delete(panel.id);
    if (!read || Object.keys(window).length || need.times || need.points !== read.points) return null;
    return read.data.then(function (data) {
      const byKey = new Map(data.series.map((s) => [s.key, s]));
      return { ...data, series: panel.keys.map((k) => byKey.get(k) || { key: k, steps: [], values: [] }) };
    });
  }

  // Points come in the order they were written (a late val/loss for an old step, a step
  // re-logged after a resume); each is merged into its line by step. A panel not drawn yet
  // reads them with its first read; a panel given a new line is read again.
  function appendPoints(points) {
    const now = Date.now() / 1000;  // live points carry no time: they were written just now
    const grown = addKeys(Object.keys(points));
    for (const [key, pairs] of Object.entries(points)) {
      const panel = panels.get(panelOf(key));
      if (panel.status === "idle" || grown.has(panel)) continue;
      panel.chart.appendKey(key, pairs.map((p) => [p[0], p[1], now]));
      const div = panel.chart.div;
      if (pairs.length && div.layout && (div.layout.annotations || []).length) Plotly.relayout(div, { annotations: [] });
    }
    for (const panel of grown) if (panel.status !== "idle") drawPanel(panel);
    const latest = {};
    for (const [key, pairs] of Object.entries(points)) if (pairs.length) latest[key] = pairs[pairs.length - 1][1];
    showLatest(latest);
  }

  // The header's figures from the latest points: throughput, MFU, tokens, ETA, learning rate.
  const latest = { ...(state.latest || {}) };
  function compact(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return "–";
    const units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]];
    for (const [size, unit] of units) if (Math.abs(n) >= size) return (n / size).toFixed(n / size >= 100 ? 0 : 1) + unit;
    return String(Math.round(n));
  }
  function showLatest(values) {
    Object.assign(latest, values);
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    set("run-tokens-per-s", compact(latest["perf/tokens_per_s"]));
    set("run-tokens-seen", compact(latest["perf/tokens_seen"]));
    const lr = latest["train/lr"];
    set("run-lr", lr === undefined || lr === null ? "–" : Number(lr).toExponential(2));
    const mfu = latest["perf/mfu"];
    document.getElementById("run-mfu-stat").hidden = mfu === undefined || mfu === null;
    if (mfu !== undefined && mfu !== null) set("run-mfu", (100 * mfu).toFixed(1) + "%");
    showProgress();
  }
  function showProgress() {
    const max = state.max_steps;
    document.getElementById("run-progress").style.width = max ? Math.min(100, 100 * step / max).toFixed(1) + "%" : "0%";
    const perStep = latest["perf/step_time_s"];
    let eta = "–";
    if (state.status === "completed") eta = "done";
    else if (durationTicking && max && perStep) eta = rw.duration(Math.max(0, max - step) * perStep);
    document.getElementById("run-eta").textContent = eta;
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
      state.status = update.status;
      statusBadge.textContent = update.status;
      statusBadge.className = "badge status-" + update.status;
    }
    if (update.step !== undefined) { step = update.step; stepEl.textContent = update.step; }
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
    if (["completed", "failed", "cancelled", "lost"].includes(update.status)) refreshEndedParts();
    durationTicking = state.status === "running" || state.status === "starting";
    showProgress();
  }

  // An ended run's header actions (Resume, Restart, Delete…) and attempts come from the
  // server, which knows the checkpoints and the person's role: read them again from the page.
  function refreshEndedParts() {
    fetch(window.location.pathname, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : null))
      .then((html) => {
        if (!html) return;
        const fresh = new DOMParser().parseFromString(html, "text/html");
        for (const id of ["run-actions", "run-attempts"]) {
          const here = document.getElementById(id);
          const there = fresh.getElementById(id);
          if (here && there) here.replaceWith(there);
        }
      })
      .catch(() => {});  // the buttons are there after a reload anyway
  }

  // The samples table, read again when the run passes a sample step (and at its end).
  let samplesAt = Math.floor(step / (state.sample_every || Infinity));
  function samplesDue() {
    if (!state.sample_every) return false;
    const at = Math.floor(step / state.sample_every);
    if (at === samplesAt) return false;
    samplesAt = at;
    return true;
  }

  async function refreshPanel(id) {
    const panel = document.getElementById(id);
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
    const streamUrl = new URL(chartsBox.dataset.streamUrl, location.href);
    streamUrl.searchParams.set("after", cursor);
    streamUrl.searchParams.set("log_after", logAfter);
    rw.live({
      stream: streamUrl.href,
      // The polling fallback asks the same view for what came after the last update.
      poll: function (last) {
        const url = new URL(streamUrl);
        url.searchParams.set("poll", "1");
        if (last) url.searchParams.set("cursor", last);
        return url.href;
      },
      every: 1000,
      onUpdate: function (update) {
        applyState(update);
        if (samplesDue()) refreshPanel("run-samples");
        appendPoints(update.points || {});
        appendLogs(update.logs || []);
      },
      onEnd: function (data) {
        applyState(data);
        durationTicking = false;
        showProgress();
        refreshPanel("run-evals");  // the run's last checkpoint can now be evaluated
        refreshPanel("run-samples");
        refreshPanel("run-checkpoints");
      },
      onTrouble: function (lost) {
        if (lost) note.textContent = "connection lost; reconnecting…";
        else if (note.textContent.startsWith("connection")) note.textContent = "";
      },
    });
  }

  // A checkpoint's "Evaluate" picks it in the evaluations panel's form.
  document.addEventListener("click", function (event) {
    const link = event.target.closest("[data-eval-step]");
    const select = document.getElementById("run-eval-step");
    if (link && select) select.value = link.dataset.evalStep;
  });

  durationEl.textContent = rw.duration(duration);
  durationTicking = state.status === "running" || state.status === "starting";
  showLatest({});
  setInterval(function () {
    if (durationTicking && duration !== null) { duration += 1; durationEl.textContent = rw.duration(duration); }
  }, 1000);
  init();
})();
