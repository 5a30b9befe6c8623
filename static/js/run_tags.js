// Inline tag editing, for the runs table and the run page alike: inside ``root``, a
// [data-add-tag=RUN] button opens a small input (Enter adds, Escape gives up) and a
// [data-remove-tag=TAG] button inside [data-run-tags=RUN] takes the tag off. Each change is
// one POST to the run's tags URL (``urlTemplate`` names run 0); the server's answer (the
// run's tags) redraws the chips, and a refused tag shows the server's message.
"use strict";
window.rw = window.rw || {};

rw.runTags = function (root, urlTemplate) {
  if (!root || !urlTemplate) return;
  const csrf = (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";

  function urlFor(runId) { return urlTemplate.replace("/runs/0/", "/runs/" + encodeURIComponent(runId) + "/"); }

  function chip(cell, tag) {
    const span = document.createElement("span");
    span.className = "run-tag";
    span.dataset.tag = tag;
    const link = document.createElement("a");
    link.href = "?tag=" + encodeURIComponent(tag);
    link.textContent = tag;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "tag-remove";
    remove.dataset.removeTag = tag;
    remove.setAttribute("aria-label", "Remove tag " + tag);
    remove.textContent = "×";
    span.append(link, remove);
    return span;
  }

  function redraw(cell, tags) {
    for (const old of cell.querySelectorAll(".run-tag, .tag-input, .tag-error")) old.remove();
    const add = cell.querySelector("[data-add-tag]");
    for (const tag of tags) cell.insertBefore(chip(cell, tag), add);
  }

  function showError(cell, message) {
    for (const old of cell.querySelectorAll(".tag-error")) old.remove();
    const error = document.createElement("span");
    error.className = "tag-error";
    error.setAttribute("role", "alert");
    error.textContent = message;
    cell.append(error);
  }

  async function send(cell, field, tag) {
    const form = new URLSearchParams();
    form.append(field, tag);
    const response = await fetch(urlFor(cell.dataset.runTags), {
      method: "POST", body: form, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    });
    let data = {};
    try { data = await response.json(); } catch (err) { /* an HTML error page */ }
    if (!response.ok) {
      showError(cell, data.error || "Could not change the tags (HTTP " + response.status + ").");
      return false;
    }
    redraw(cell, data.tags);
    return true;
  }

  function openInput(cell) {
    if (cell.querySelector(".tag-input")) return;
    const input = document.createElement("input");
    input.className = "tag-input";
    input.maxLength = 40;
    input.placeholder = "new tag";
    input.setAttribute("aria-label", "New tag");
    cell.insertBefore(input, cell.querySelector("[data-add-tag]"));
    input.focus();
    input.addEventListener("keydown", async (event) => {
      if (event.key === "Escape") input.remove();
      if (event.key !== "Enter") return;
      event.preventDefault();
      const tag = input.value.trim();
      if (!tag) { input.remove(); return; }
      if (await send(cell, "add", tag)) input.remove();
    });
    input.addEventListener("blur", () => { if (!input.value.trim()) input.remove(); });
  }

  root.addEventListener("click", (event) => {
    const add = event.target.closest("[data-add-tag]");
    const remove = event.target.closest("[data-remove-tag]");
    const cell = event.target.closest("[data-run-tags]");
    if (!cell) return;
    if (add) openInput(cell);
    if (remove) send(cell, "remove", remove.dataset.removeTag);
  });
};
