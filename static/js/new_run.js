// The new-run form: presets fill the fields; edits re-validate and re-estimate on the server.
"use strict";
(function () {
  const form = document.getElementById("run-form");
  if (!form) return;
  const presets = JSON.parse(document.getElementById("presets-data").textContent);
  const presetSelect = form.querySelector("[name=preset]");
  const status = document.getElementById("estimate-status");
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  const inputs = Array.from(form.querySelectorAll("[data-path]"));

  function setValue(input, value) {
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value === null || value === undefined ? "" : String(value);
  }

  function fillPreset(name) {
    const values = presets[name];
    if (!values) return;
    for (const input of inputs) {
      const [section, field] = input.dataset.path.split(".");
      if (values[section] && field in values[section]) setValue(input, values[section][field]);
    }
  }

  // Send what the user typed; the server answers type errors the same way the form would.
  function readValue(input) {
    if (input.type === "checkbox") return input.checked;
    const raw = input.value.trim();
    if (input.type === "number" || input.classList.contains("num")) {
      if (raw !== "" && isFinite(Number(raw))) return Number(raw);
    }
    return raw;
  }

  function config() {
    const out = {};
    for (const input of inputs) {
      const [section, field] = input.dataset.path.split(".");
      (out[section] = out[section] || {})[field] = readValue(input);
    }
    return out;
  }

  function showErrors(errors) {
    for (const p of form.querySelectorAll("[data-error-for]")) {
      const message = errors[p.dataset.errorFor];
      p.textContent = message || "";
      p.hidden = !message;
      p.closest(".field").classList.toggle("has-error", Boolean(message));
      if (message) {
        const details = p.closest("details");
        if (details) details.open = true;
      }
    }
    const summary = document.getElementById("error-summary");
    const n = Object.keys(errors).length;
    summary.hidden = n === 0;
    summary.firstElementChild.textContent =
      "The config has " + n + " problem" + (n === 1 ? "" : "s") + "; each is shown next to its field below.";
    for (const fieldset of form.querySelectorAll("fieldset.section")) {
      fieldset.classList.toggle("section-has-errors", Boolean(fieldset.querySelector(".field.has-error")));
    }
  }

  function showEstimate(est) {
    for (const dd of document.querySelectorAll("[data-est]")) {
      dd.textContent = est ? est.display[dd.dataset.est] : "–";
    }
  }

  let pending = null, sequence = 0;
  async function refresh() {
    const mine = ++sequence;
    try {
      const response = await fetch(form.dataset.estimateUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ preset: presetSelect.value, config: config() }),
      });
      if (mine !== sequence) return;  // a newer edit is already being checked
      const body = await response.json();
      if (response.ok) {
        showErrors({});
        showEstimate(body);
        status.textContent = "";
      } else if (response.status === 400 && body.errors) {
        showErrors(body.errors);
        showEstimate(null);
        const n = Object.keys(body.errors).length;
        status.textContent = n + " field" + (n === 1 ? " needs" : "s need") + " fixing (marked in red).";
      }
    } catch (err) {
      status.textContent = "Could not check the config right now.";
    }
  }

  function scheduleRefresh() {
    clearTimeout(pending);
    pending = setTimeout(refresh, 250);
  }

  presetSelect.addEventListener("change", function () {
    fillPreset(presetSelect.value);
    scheduleRefresh();
  });
  form.addEventListener("input", function (event) {
    if (event.target.dataset.path) scheduleRefresh();
  });
  form.addEventListener("change", function (event) {
    if (event.target.dataset.path) scheduleRefresh();
  });
})();
