// simplepyq dashboard: keeps a page's figures live without reloading it.
//
// Every page names its JSON in <body data-live>. Every REFRESH ms (while the tab
// is visible) this fetches it, swaps in each live part whose version changed (so
// that a fold opened in an unchanged part stays open) and redraws the overview's
// chart from its series. The markup of the parts is built and escaped by the
// server, exactly as in the page itself; this file adds no text of its own to it.
(function () {
  "use strict";

  const body = document.body;
  const url = body.dataset.live;
  const every = Number(body.dataset.refresh) || 2000;
  const state = document.getElementById("live-state");
  let timer = null;
  let busy = false;

  function say(text, kind) {
    if (state) {
      state.textContent = text;
      state.className = "live-state " + kind;
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (!document.hidden) {
      timer = setTimeout(refresh, every);
    }
  }

  function swap(parts) {
    for (const [id, part] of Object.entries(parts)) {
      const section = document.getElementById("part-" + id);
      if (section && section.dataset.version !== part.version) {
        section.innerHTML = part.html;
        section.dataset.version = part.version;
      }
    }
  }

  function drawChart(series) {
    const svg = document.getElementById("throughput");
    if (!svg || !series) {
      return;
    }
    const bars = svg.querySelectorAll("g.bar");
    if (bars.length !== series.done.length) {
      return;
    }
    const top = Number(svg.dataset.top);
    const base = Number(svg.dataset.base);
    let peak = 0;
    series.done.forEach((done, i) => { peak = Math.max(peak, done + series.failed[i]); });
    const scale = (base - top) / Math.max(peak, 1);
    bars.forEach((bar, i) => {
      const done = series.done[i] * scale;
      const failed = series.failed[i] * scale;
      const rectDone = bar.querySelector("rect.done");
      const rectFailed = bar.querySelector("rect.failed");
      rectDone.setAttribute("y", (base - done).toFixed(1));
      rectDone.setAttribute("height", done.toFixed(1));
      rectFailed.setAttribute("y", (base - done - failed).toFixed(1));
      rectFailed.setAttribute("height", failed.toFixed(1));
      bar.querySelector("title").textContent = series.minutes[i] + ": " +
        count(series.done[i]) + " done, " + count(series.failed[i]) + " failed";
    });
    const label = document.getElementById("throughput-peak");
    if (label) {
      label.textContent = "peak " + count(peak) + "/min";
    }
  }

  function count(n) {
    return n.toLocaleString("en-US");
  }

  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(url, {
        headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store",
      });
      if (!response.ok) {
        say("offline (" + response.status + ")", "offline");
      } else {
        const data = await response.json();
        swap(data.parts || {});
        drawChart(data.chart);
        say("live", "live");
      }
    } catch (error) {
      say("offline", "offline");
    } finally {
      busy = false;
      schedule();
    }
  }

  if (!url) {
    return;
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      say("paused", "paused");
    } else {
      refresh();
    }
  });
  say("live", "live");
  schedule();
})();
