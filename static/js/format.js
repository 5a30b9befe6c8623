// Small display helpers shared by the runs list and the run page.
"use strict";
window.rw = window.rw || {};

rw.duration = function (seconds) {
  if (seconds === null || seconds === undefined || seconds === "" || isNaN(seconds)) return "–";
  seconds = Math.max(0, Math.round(Number(seconds)));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (h) return h + "h " + String(m).padStart(2, "0") + "m";
  if (m) return m + "m " + String(s).padStart(2, "0") + "s";
  return s + "s";
};

rw.loss = function (value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(4);
};

rw.when = function (iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
};

rw.el = function (tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
};
