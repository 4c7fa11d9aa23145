// CONTROL/MONITORING: refresh the router state and the table every N seconds without
// reloading the page, and draw the charts from the director's counters.  No library:
// the router box serves everything itself (no CDN).  The page works without this file.
"use strict";
(function () {
  const controls = document.getElementById("controls");
  if (!controls) return;
  const every = parseInt(controls.dataset.refresh, 10) || 0;
  const HISTORY = 120;            // samples kept per series
  const series = {};              // key -> {label, samples: [{t, cps, active, pps, bps}]}
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  let timer = null;

  function sample(t, points) {
    for (const p of points) {
      const s = series[p.key] || (series[p.key] = {label: p.virtual + " / " + p.server, samples: []});
      s.samples.push({t: t, cps: p.cps, active: p.active, pps: p.inpps + p.outpps, bps: p.inbps + p.outbps});
      if (s.samples.length > HISTORY) s.samples.shift();
    }
  }

  function draw(canvas) {
    const metric = canvas.dataset.metric;
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 34;
    ctx.clearRect(0, 0, w, h);
    const keys = Object.keys(series).sort();
    let tmin = Infinity, tmax = -Infinity, vmax = 1;
    for (const k of keys) for (const s of series[k].samples) {
      tmin = Math.min(tmin, s.t); tmax = Math.max(tmax, s.t); vmax = Math.max(vmax, s[metric]);
    }
    ctx.strokeStyle = "#999"; ctx.fillStyle = "#555"; ctx.font = "11px sans-serif";
    ctx.beginPath(); ctx.moveTo(pad, 4); ctx.lineTo(pad, h - 16); ctx.lineTo(w - 4, h - 16); ctx.stroke();
    ctx.fillText(String(vmax), 2, 12); ctx.fillText("0", 2, h - 16);
    if (!isFinite(tmin) || tmax === tmin) { ctx.fillText("collecting…", pad + 8, h / 2); return; }
    ctx.fillText(Math.round(tmax - tmin) + " s", w - 40, h - 3);
    keys.forEach(function (k, i) {
      ctx.strokeStyle = COLOURS[i % COLOURS.length]; ctx.lineWidth = 2; ctx.beginPath();
      series[k].samples.forEach(function (s, j) {
        const x = pad + (s.t - tmin) / (tmax - tmin) * (w - pad - 6);
        const y = (h - 16) - s[metric] / vmax * (h - 24);
        if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    });
  }

  function legend() {
    const el = document.getElementById("legend");
    el.textContent = "";
    Object.keys(series).sort().forEach(function (k, i) {
      const item = document.createElement("span");
      item.style.borderColor = COLOURS[i % COLOURS.length];
      item.textContent = series[k].label;
      el.appendChild(item);
    });
  }

  function stamp(t) {
    document.getElementById("updated").textContent = "updated " + new Date(t * 1000).toLocaleTimeString();
  }

  async function update() {
    try {
      const r = await fetch("/monitor/live?refresh=" + every, {credentials: "same-origin", cache: "no-store"});
      if (r.status === 401) { window.location = "/login?next=/monitor"; return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      const data = await r.json();
      document.getElementById("table").innerHTML = data.table;
      document.getElementById("router").innerHTML = data.router;
      sample(data.time, data.points);
      document.querySelectorAll("canvas[data-metric]").forEach(draw);
      legend();
      stamp(data.time);
    } catch (e) {
      document.getElementById("updated").textContent = "update failed: " + e.message;
    }
  }

  function schedule() {
    if (timer) clearInterval(timer);
    if (every > 0) timer = setInterval(update, every * 1000);
  }

  document.getElementById("update-now").addEventListener("click", function (ev) {
    ev.preventDefault();
    update();
  });
  update();
  schedule();
})();
