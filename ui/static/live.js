// The live parts of liminald's web view: the tail page's rows, and a
// message's timeline, which reloads when an event of its message commits.
// Both read /events, the server-sent events of a subscription.
"use strict";

(function () {
  const tail = document.getElementById("tail");
  const timeline = document.getElementById("timeline");
  const conv = tail ? tail.dataset.conv : timeline ? timeline.dataset.conv : null;
  if (conv === null) {
    return;
  }
  const source = new EventSource("/events" + (conv ? "?conv=" + encodeURIComponent(conv) : ""));
  const status = document.getElementById("status");
  const say = (text) => { if (status) { status.textContent = text; } };

  source.onopen = () => {
    say("Live: events appear here as they are committed.");
    const live = document.getElementById("live");
    if (live) { live.hidden = false; }
  };
  source.addEventListener("end", (e) => {
    say("The subscription ended (" + e.data + "); reload the page to go on.");
    source.close();
  });
  source.onerror = () => say("Disconnected; retrying…");

  source.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    if (timeline) {
      if (ev.message_id === timeline.dataset.message) {
        location.reload();
      }
      return;
    }
    const row = document.createElement("tr");
    row.className = "event type-" + ev.type;
    const link = "/c/" + encodeURIComponent(ev.conversation) + "/m/" + encodeURIComponent(ev.message_id);
    const cells = [String(ev.pos), new Date(ev.ts).toISOString().replace("T", " ").replace("Z", ""), ev.conversation, String(ev.seq), ev.type];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      row.appendChild(td);
    }
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = link;
    a.textContent = ev.message_id;
    td.appendChild(a);
    row.appendChild(td);
    tail.tBodies[0].prepend(row);
  };
})();
