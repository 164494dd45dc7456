// The Pipeline page's trend charts (walkthrough F26): events/s and lag per minute, from the JSON the
// live section carries (#pipeline-trend-data). htmx swaps that section every 5 s; the charts are drawn
// again from the new data each time (no animation, so nothing flickers).
(function () {
  "use strict";

  var COLORS = { accepted: "#2859a8", landed: "#1b7f3b", merged: "#a15c00", lag: "#b42318", p50: "#2859a8",
                 p99: "#b42318", late: "#a15c00", duplicates: "#6b4fa8" };

  function chartOn(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas || !window.Chart) { return; }
    var old = window.Chart.getChart(canvas);
    if (old) { old.destroy(); }
    new window.Chart(canvas, config);
  }

  function line(label, data, color, extra) {
    var set = { label: label, data: data, borderColor: color, backgroundColor: color, borderWidth: 2,
                pointRadius: 0, pointHitRadius: 6, tension: 0.25, spanGaps: false };
    return Object.assign(set, extra || {});
  }

  function options(yTitle) {
    return {
      animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true, title: { display: true, text: yTitle } } }
    };
  }

  function draw() {
    var node = document.getElementById("pipeline-trend-data");
    if (!node) { return; }
    var s = JSON.parse(node.textContent);
    chartOn("trend-rate", { type: "line", options: options("events/s"), data: { labels: s.labels, datasets: [
      line("accepted by the collectors", s.accepted, COLORS.accepted),
      line("landed by the shard readers", s.landed, COLORS.landed),
      line("merged into CANONICAL.EVENTS", s.merged, COLORS.merged, { borderDash: [5, 3] })
    ] } });
    chartOn("trend-lag", { type: "line", options: options("seconds"), data: { labels: s.labels, datasets: [
      line("largest shard lag", s.lag_s, COLORS.lag)
    ] } });
    chartOn("trend-latency", { type: "line", options: options("seconds"), data: { labels: s.labels, datasets: [
      line("p50", s.latency_p50_s, COLORS.p50),
      line("p99", s.latency_p99_s, COLORS.p99, { borderDash: [5, 3] })
    ] } });
    chartOn("trend-copies", { type: "line", options: options("copies"), data: { labels: s.labels, datasets: [
      line("late", s.late, COLORS.late),
      line("duplicates", s.duplicates, COLORS.duplicates, { borderDash: [5, 3] })
    ] } });
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
