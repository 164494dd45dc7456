// A scorecard's 30-day history (quality/scorecard.html): the score per evaluation, each point coloured by its
// grade, from the JSON the page carries (#scorecard-history-data).
(function () {
  "use strict";

  var COLORS = { green: "#1b7f3b", amber: "#a15c00", red: "#b42318", unknown: "#777777" };

  function draw() {
    var node = document.getElementById("scorecard-history-data");
    var canvas = document.getElementById("scorecard-history");
    if (!node || !canvas || !window.Chart) { return; }
    var h = JSON.parse(node.textContent);
    var points = h.levels.map(function (level) { return COLORS[level] || COLORS.unknown; });
    new window.Chart(canvas, {
      type: "line",
      data: { labels: h.labels, datasets: [{ label: "score", data: h.scores, borderColor: "#2859a8",
        pointBackgroundColor: points, pointBorderColor: points, pointRadius: 3, borderWidth: 2, stepped: true }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { min: 0, max: 100, title: { display: true, text: "score" } } } }
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
