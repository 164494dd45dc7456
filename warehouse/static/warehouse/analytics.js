/* The analytics dashboard: the page arrives with a loading skeleton in every chart, number and table
   (it does not wait for the warehouse); this script fetches data.json at once, draws, then refetches
   every 30 s and updates the charts, numbers and tables in place (no reload). Polling pauses while the
   tab is hidden and catches up when it is shown again. */
(function () {
  "use strict";

  var root = document.getElementById("analytics");
  if (!root || typeof window.Chart === "undefined") return;

  var dataUrl = root.dataset.dataUrl + (root.dataset.window ? "?window=" + encodeURIComponent(root.dataset.window) : "");
  var refreshMs = (parseInt(root.dataset.refreshSeconds, 10) || 30) * 1000;
  var charts = {};
  var lastFetch = Date.now();
  var timer = null;
  var stopped = false;
  var inFlight = false;

  // Fixed colours for the values people compare across charts; other series take the palette in order.
  var PALETTE = ["#2859a8", "#e07b24", "#1b7f3b", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d4ac0d", "#34495e"];
  var NAMED = {
    web: "#2859a8", ios: "#8e44ad", android: "#1b7f3b", slack: "#e07b24", voice: "#16a085", api: "#7f8c8d",
    completed: "#1b7f3b", abandoned: "#9aa3ad", escalated: "#d4ac0d", error: "#b42318",
    thumbs: "#2859a8", stars: "#e07b24", text: "#16a085",
    user_messages: "#9bb7e0", assistant_messages: "#2859a8",
    first_response_p50_ms: "#e07b24", first_response_p90_ms: "#b42318", response_p50_ms: "#8e44ad",
    uncached_input_tokens: "#2859a8", cached_input_tokens: "#9bb7e0", output_tokens: "#16a085", cost_usd: "#e07b24",
    sessions: "#2859a8", requests: "#9bb7e0", mean_score: "#2859a8", feedback: "#c9d3e0",
    new_people: "#c9d3e0", d1_pct: "#2859a8", d7_pct: "#e07b24", d30_pct: "#1b7f3b"
  };

  function colour(key, index) { return NAMED[key] || PALETTE[index % PALETTE.length]; }

  var int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  function usd(v, digits) {
    return "$" + Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function shortDay(label) {
    if (typeof label === "string" && label.indexOf("T") === 10) return shortHour(label);   // the hourly window
    return typeof label === "string" && label.length >= 10 ? label.slice(5, 10) : label;
  }
  function shortHour(label) {
    // "2026-01-02T13:00Z" -> "13:00", with the date at midnight
    var hour = label.slice(11, 16);
    return hour === "00:00" ? label.slice(5, 10) + " 00:00" : hour;
  }

  // --- what each chart is: how its series are drawn and which axes it has --------------------------

  // One number of decimals for the whole axis, from its step: $0, $0.50, $1.00 (never $1, $1, $0.500)
  function stepDigits(ticks) {
    var step = ticks.length > 1 ? Math.abs(ticks[1].value - ticks[0].value) : Math.abs(ticks[0] ? ticks[0].value : 1);
    if (!step || step >= 1 - 1e-9) return 0;
    return Math.min(6, Math.max(2, Math.ceil(-Math.log10(step) - 1e-9)));
  }
  var money = { ticks: { callback: function (v, i, ticks) { return usd(v, stepDigits(ticks)); } } };
  function plain(v, i, ticks) {
    var d = stepDigits(ticks);
    return Number(v).toLocaleString("en-US", { minimumFractionDigits: d === 0 ? 0 : Math.min(d, 1), maximumFractionDigits: d });
  }
  var SPECS = {
    active_people: { type: "line", x: shortDay, axes: { y: { beginAtZero: true, title: "people" } } },
    sessions: { type: "bar", stacked: true, x: shortDay, axes: { y: { beginAtZero: true, title: "sessions" } } },
    outcomes: { type: "bar", stacked: true, x: shortDay, axes: { y: { beginAtZero: true, title: "sessions" } } },
    activity_hourly: {
      type: "bar", x: shortHour,
      series: { cost_usd: { type: "line", yAxisID: "y1" } },
      axes: { y: { beginAtZero: true, title: "sessions / requests" },
              y1: { beginAtZero: true, position: "right", title: "cost (USD)", extra: money } }
    },
    messages_latency: {
      type: "bar", x: shortDay, xStacked: true,
      series: {
        user_messages: { stack: "messages" }, assistant_messages: { stack: "messages" },
        first_response_p50_ms: { type: "line", yAxisID: "y1" }, first_response_p90_ms: { type: "line", yAxisID: "y1" },
        response_p50_ms: { type: "line", yAxisID: "y1", borderDash: [4, 3] }
      },
      // the unit, the maximum and the clipping come with the data (chart.latency_axis): latencySpec()
      axes: { y: { beginAtZero: true, stacked: true, title: "messages" },
              y1: { beginAtZero: true, position: "right", title: "latency", grid: false, extra: { ticks: { callback: plain } } } }
    },
    cost_by_day: { type: "bar", stacked: true, x: shortDay, axes: { y: { beginAtZero: true, title: "USD", extra: money } } },
    usage_by_model: usageSpec(),
    usage_by_product: usageSpec(),
    feedback_distribution: { type: "bar", stacked: true, axes: { y: { beginAtZero: true, title: "feedback" } } },
    feedback_trend: {
      type: "bar", x: shortDay,
      series: { mean_score: { type: "line", yAxisID: "y", spanGaps: true }, feedback: { yAxisID: "y1" } },
      axes: { y: { min: -1, max: 1, title: "mean score" },
              y1: { beginAtZero: true, position: "right", title: "feedback given", grid: false } }
    },
    retention: {
      type: "bar", x: shortDay,
      series: { new_people: { yAxisID: "y1" }, d1_pct: { type: "line", yAxisID: "y", spanGaps: true },
                d7_pct: { type: "line", yAxisID: "y", spanGaps: true }, d30_pct: { type: "line", yAxisID: "y", spanGaps: true } },
      axes: { y: { min: 0, max: 100, title: "% of cohort back",
                   extra: { ticks: { callback: function (v) { return v + "%"; } } } },
              y1: { beginAtZero: true, position: "right", title: "new people", grid: false } }
    }
  };

  function usageSpec() {
    return {
      type: "bar", xStacked: true,
      series: { uncached_input_tokens: { stack: "tokens" }, cached_input_tokens: { stack: "tokens" },
                output_tokens: { stack: "tokens" }, cost_usd: { stack: "cost", yAxisID: "y1" } },
      axes: { y: { beginAtZero: true, stacked: true, title: "tokens" },
              y1: { beginAtZero: true, position: "right", title: "cost (USD)", grid: false, extra: money } }
    };
  }

  // Latency in the unit the server picked (s or ms), an outlier drawn at the axis top (a triangle)
  // with its real value in the tooltip.
  function latencyValues(chart, series) {
    var axis = chart.latency_axis || { divisor: 1, max: null };
    return series.values.map(function (v) {
      if (v === null || v === undefined) return null;
      var shown = v / axis.divisor;
      return axis.max !== null && shown > axis.max ? axis.max : shown;
    });
  }
  function latencyPoints(chart, series) {
    var axis = chart.latency_axis || { divisor: 1, max: null };
    return series.values.map(function (v) {
      return v !== null && v !== undefined && axis.max !== null && v / axis.divisor > axis.max ? "triangle" : "circle";
    });
  }
  function isLatency(key) { return /_ms$/.test(key || ""); }

  function scales(spec, chart) {
    // bars group by their dataset's `stack` only on a stacked index axis (Chart.js BarController)
    var out = { x: { stacked: !!(spec.stacked || spec.xStacked), ticks: { autoSkip: true, maxRotation: 0 } } };
    if (spec.x) {
      out.x.ticks.callback = function (value) { return spec.x(this.getLabelForValue(value)); };
    }
    Object.keys(spec.axes || {}).forEach(function (id) {
      var a = spec.axes[id];
      var axis = Object.assign({ beginAtZero: !!a.beginAtZero, stacked: a.stacked !== undefined ? a.stacked : !!spec.stacked,
                                 position: a.position || "left" }, a.extra || {});
      if (a.min !== undefined) axis.min = a.min;
      if (a.max !== undefined) axis.max = a.max;
      if (a.title) axis.title = { display: true, text: a.title };
      if (a.grid === false) axis.grid = { drawOnChartArea: false };
      out[id] = axis;
    });
    if (chart && chart.latency_axis && out.y1) {
      out.y1.title = { display: true, text: chart.latency_axis.title };
      if (chart.latency_axis.max !== null) out.y1.max = chart.latency_axis.max; else delete out.y1.max;
    }
    return out;
  }

  function dataset(spec, series, index, chart) {
    var extra = (spec.series || {})[series.key] || {};
    var type = extra.type || spec.type;
    var c = colour(series.key, index);
    var latency = isLatency(series.key);
    var ds = Object.assign({
      key: series.key, label: series.label, type: type, raw: series.values.slice(),
      data: latency ? latencyValues(chart, series) : series.values.slice(),
      pointStyle: latency ? latencyPoints(chart, series) : "circle",
      backgroundColor: type === "line" ? c : c + "cc", borderColor: c, borderWidth: type === "line" ? 2 : 0,
      pointRadius: type === "line" ? (latency ? 3 : 2) : 0, tension: 0.25, yAxisID: "y",
      order: type === "line" ? 0 : 1   // lines drawn over bars
    }, extra);
    ds.type = type;
    return ds;
  }

  // --- drawing and updating ---------------------------------------------------------------------------

  function chartFor(key, chart) {
    var spec = SPECS[key];
    var canvas = document.getElementById("chart-" + key);
    if (!spec || !canvas) return null;
    var existing = charts[key];
    if (!existing) {
      existing = charts[key] = new window.Chart(canvas, {
        type: spec.type,
        data: { labels: chart.labels.slice(), datasets: chart.series.map(function (s, i) { return dataset(spec, s, i, chart); }) },
        options: {
          responsive: true, maintainAspectRatio: false, animation: { duration: 300 },
          interaction: { mode: "index", intersect: false },
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } },
                     tooltip: { callbacks: { label: tooltipLabel } } },
          scales: scales(spec, chart)
        }
      });
      existing.$latency = chart.latency_axis || null;
      return existing;
    }
    existing.$latency = chart.latency_axis || null;
    if (chart.latency_axis) existing.options.scales = scales(spec, chart);
    // in place: same dataset objects where the series is still there, so only the numbers move
    existing.data.labels = chart.labels.slice();
    var byKey = {};
    existing.data.datasets.forEach(function (ds) { byKey[ds.key] = ds; });
    existing.data.datasets = chart.series.map(function (s, i) {
      var ds = byKey[s.key];
      if (!ds) return dataset(spec, s, i, chart);
      ds.raw = s.values.slice();
      ds.data = isLatency(s.key) ? latencyValues(chart, s) : s.values.slice();
      if (isLatency(s.key)) ds.pointStyle = latencyPoints(chart, s);
      ds.label = s.label;
      return ds;
    });
    existing.update();
    return existing;
  }

  function tooltipLabel(ctx) {
    var v = ctx.parsed.y !== undefined ? ctx.parsed.y : ctx.parsed;
    if (v === null || v === undefined) return ctx.dataset.label + ": —";
    var key = ctx.dataset.key || "";
    if (key === "cost_usd" || ctx.chart.canvas.id === "chart-cost_by_day") return ctx.dataset.label + ": " + usd(v, 4);
    if (/_pct$/.test(key)) return ctx.dataset.label + ": " + v + "%";
    if (isLatency(key)) {
      var raw = ctx.dataset.raw ? ctx.dataset.raw[ctx.dataIndex] : v;
      var axis = ctx.chart.$latency || { unit: "ms", divisor: 1 };
      var text = axis.unit === "s" ? (raw / 1000).toLocaleString("en-US", { maximumFractionDigits: 1 }) + " s"
                                   : int.format(raw) + " ms";
      return ctx.dataset.label + ": " + text + (raw / axis.divisor > (axis.max || Infinity) ? " (above the axis)" : "");
    }
    if (key === "mean_score") return ctx.dataset.label + ": " + (v > 0 ? "+" : "") + v.toFixed(2);
    return ctx.dataset.label + ": " + int.format(v);
  }

  function show(el, visible) { if (el) el.hidden = !visible; }
  function bind(name) { return root.querySelector('[data-bind="' + name + '"]'); }
  function setText(el, text) { if (el) el.textContent = text || ""; }

  function renderCharts(data) {
    var error = !!data.error;
    root.querySelectorAll("[data-chart]").forEach(function (card) {
      var key = card.dataset.chart;
      var chart = (data.charts || {})[key];
      var empty = !error && (!chart || chart.empty);
      show(card.querySelector('[data-state="loading"]'), false);
      show(card.querySelector(".chart-box"), !error && !empty);
      show(card.querySelector('[data-state="empty"]'), empty);
      show(card.querySelector('[data-state="unavailable"]'), error);
      var note = card.querySelector('[data-state="note"]');
      if (note) { setText(note.querySelector("small") || note, chart && chart.note); show(note, !!(chart && chart.note)); }
      if (!error && chart && !empty) chartFor(key, chart);
    });
  }

  function renderKpis(data) {
    var kpis = data.kpis || {};
    Object.keys(kpis).forEach(function (key) {
      var el = root.querySelector('[data-kpi="' + key + '"]');
      if (el) el.classList.remove("loading-text");
      setText(el, kpis[key].text);
      setText(root.querySelector('[data-kpi-note="' + key + '"]'), kpis[key].note);
    });
  }

  var FORMATS = {
    int: function (v) { return v === null || v === undefined ? "—" : int.format(v); },
    usd: function (v) { return v === null || v === undefined ? "—" : usd(v, 4); },
    pct: function (v) { return v === null || v === undefined ? "—" : v + "%"; }
  };

  function renderTables(data) {
    if (data.error) {   // keep the last numbers (the banner says they are not current); never "Loading…" forever
      root.querySelectorAll('table[data-rows] [data-state="loading"]').forEach(function (cell) {
        cell.textContent = "Not shown: the warehouse could not be reached.";
      });
      return;
    }
    root.querySelectorAll("table[data-rows]").forEach(function (table) {
      var path = table.dataset.rows.split(".");
      var rows = (data.charts || {})[path[0]];
      rows = rows ? rows[path[1]] : null;
      var columns = Array.prototype.map.call(table.querySelectorAll("thead th[data-key]"), function (th) {
        return { key: th.dataset.key, format: FORMATS[th.dataset.format] || String };
      });
      var body = table.tBodies[0];
      body.replaceChildren();
      if (!rows || !rows.length) {
        var tr = body.insertRow(), td = tr.insertCell();
        td.colSpan = columns.length; td.className = "muted"; td.textContent = data.empty_help || "No data yet.";
        return;
      }
      rows.forEach(function (row) {
        var tr = body.insertRow();
        columns.forEach(function (c) { tr.insertCell().textContent = c.format(row[c.key]); });
      });
    });
  }

  function renderFreshness(data) {
    var f = data.freshness || {};
    if (f.text) setText(bind("freshness-text"), f.text);
    var line = root.querySelector('[data-testid="freshness"]');
    if (line) line.classList.toggle("freshness-stale", !!f.stale);
    setText(bind("freshness-warning-text"), f.warning);
    show(bind("freshness-warning"), !!f.warning);
    setText(bind("run-failure-text"), f.failure);
    show(bind("run-failure"), !!f.failure);
    setText(bind("warehouse-error-text"), data.error ? data.detail : "");
    show(bind("warehouse-error"), !!data.error);
    var windowText = bind("window-text");
    if (data.window) setText(windowText.querySelector("small") || windowText, data.window.text);
    show(windowText, !data.error);
    var updated = bind("updated");
    if (updated && data.generated_at) {
      updated.setAttribute("datetime", data.generated_at);
      updated.textContent = data.generated_at.slice(11, 19);
    }
  }

  function render(data) {
    renderFreshness(data);
    renderKpis(data);
    renderTables(data);
    renderCharts(data);
    root.dataset.state = data.error ? "error" : "ready";   // tests and people: the numbers are in
  }

  // --- refreshing -------------------------------------------------------------------------------------

  function refreshState(text) { setText(bind("refresh-state"), text ? "; " + text : ""); }

  function refresh() {
    if (inFlight) return Promise.resolve();
    inFlight = true;
    lastFetch = Date.now();
    return fetch(dataUrl, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        var json = (response.headers.get("Content-Type") || "").indexOf("application/json") === 0;
        if (response.redirected || !json) {
          // login_required sent the sign-in page: the session has ended
          stopped = true;
          refreshState("you are signed out, reload the page to sign in again");
          return null;
        }
        return response.json().then(function (data) {
          if (response.status === 400) { refreshState(data.detail || "bad request"); return; }
          refreshState("");
          render(data);
        });
      })
      .catch(function (err) { refreshState("could not refresh (" + err.message + "), trying again"); })
      .finally(function () { inFlight = false; schedule(); });
  }

  function schedule() {
    clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(function () {
      if (document.visibilityState === "visible") refresh(); else schedule();
    }, refreshMs);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !stopped && Date.now() - lastFetch >= refreshMs) refresh();
  });

  refresh();   // the first numbers: the page itself came without them
})();
