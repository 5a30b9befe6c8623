// How every page that updates stays current: one server-sent event stream where the page
// has one and the browser can hold it open, polling otherwise. The client chooses: a
// browser without EventSource, a stream that fails before it ever opens (a proxy that
// buffers or refuses it), or ``?live=poll`` in the page's address, all poll instead.
//
//   rw.live({
//     stream: url,                 // SSE: "update" events (with an id), then one "end" event
//     poll: (cursor) => url,       // JSON {updates: [{id, data}], end: data|null}; cursor: the last id
//     every: 2000,                 // ms between polls
//     onUpdate: (data) => {},      // each update, from either path
//     onEnd: (data) => {},         // once, when the thing is finished: nothing more comes
//     onTrouble: (lost) => {},     // the connection was lost (true) or is back (false)
//     unpack: (body) => ({updates, end}),  // for a poll URL that answers in its own shape
//   });
"use strict";
window.rw = window.rw || {};

rw.live = function (options) {
  const every = options.every || 2000;
  const noop = function () {};
  const onTrouble = options.onTrouble || noop;
  const onEnd = options.onEnd || noop;
  let cursor = "";  // the id of the last update: where a poll (or a reconnect) goes on from
  let ended = false;

  function end(data) {
    if (ended) return;
    ended = true;
    onEnd(data);
  }

  async function poll() {
    if (ended) return;
    if (!document.hidden) {
      try {
        const response = await fetch(options.poll(cursor), {
          headers: { Accept: "application/json" }, credentials: "same-origin",
        });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const body = (options.unpack || ((b) => b))(await response.json());
        for (const update of body.updates || []) {
          if (update.id) cursor = update.id;
          options.onUpdate(update.data);
        }
        onTrouble(false);
        if (body.end) { end(body.end); return; }
      } catch (err) {
        onTrouble(true);
      }
    }
    setTimeout(poll, every);
  }

  function stream() {
    const source = new EventSource(options.stream);
    let opened = false, failures = 0;
    source.addEventListener("update", function (event) {
      if (event.lastEventId) cursor = event.lastEventId;
      options.onUpdate(JSON.parse(event.data));
    });
    source.addEventListener("end", function (event) {
      source.close();
      end(JSON.parse(event.data));
    });
    source.onopen = function () { opened = true; failures = 0; onTrouble(false); };
    source.onerror = function () {
      failures += 1;
      onTrouble(true);
      // EventSource reconnects on its own (resuming from the last id); a stream that never
      // opened, or keeps dropping, is not going to work here: poll from where it stopped.
      if (options.poll && (!opened || failures >= 3) && !ended) {
        source.close();
        poll();
      }
    };
  }

  const forcePoll = new URLSearchParams(location.search).get("live") === "poll";
  if (options.stream && window.EventSource && !forcePoll) stream();
  else if (options.poll) setTimeout(poll, options.stream ? 0 : every);
};
