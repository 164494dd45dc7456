// The canonical model page's filter (walkthrough F30): by a word in a field's name, meaning or
// OpenTelemetry name, by event type, by the platform that fills it, and personal data only.
// It only hides rows and sections; the page without JavaScript lists every field. The filter is
// kept in the address (?q=…&type=…&platform=…&personal=1) so a filtered view can be shared.
(function () {
  "use strict";

  var form = document.querySelector("[data-canonical-filter]");
  if (!form) { return; }
  var sections = Array.prototype.slice.call(document.querySelectorAll("section[data-event-type]"));
  var none = document.querySelector("[data-canonical-none]");
  var count = form.querySelector("[data-testid=canonical-count]");

  function current() {
    return {
      q: form.elements.q.value.trim().toLowerCase(),
      type: form.elements.type.value,
      platform: form.elements.platform.value,
      personal: form.elements.personal.checked
    };
  }

  function rowMatches(row, f) {
    if (f.personal && !row.hasAttribute("data-personal")) { return false; }
    if (f.platform) {
      var platforms = (row.getAttribute("data-platforms") || "all").split(" ");
      if (platforms.indexOf("all") < 0 && platforms.indexOf(f.platform) < 0) { return false; }
    }
    return !f.q || row.textContent.toLowerCase().indexOf(f.q) >= 0;
  }

  function tocEntry(name) {
    return document.querySelector("[data-toc-for='" + name.replace(/'/g, "") + "']");
  }

  function apply() {
    var f = current();
    var filtering = Boolean(f.q || f.type || f.platform || f.personal);
    var shown = 0;
    var total = 0;
    sections.forEach(function (section) {
      var name = section.getAttribute("data-event-type");
      var rows = section.querySelectorAll("tbody tr");
      var inType = !f.type || f.type === name;
      var matched = 0;
      Array.prototype.forEach.call(rows, function (row) {
        var ok = inType && rowMatches(row, f);
        row.hidden = !ok;
        if (ok) { matched += 1; }
      });
      total += rows.length;
      shown += matched;
      // a section stays when its rows match; an event type with no fields of its own stays when
      // picked, or when nothing narrows the list
      section.hidden = rows.length ? matched === 0 : !(inType && (!filtering || f.type === name));
      var entry = tocEntry(name);
      if (entry) {
        entry.hidden = section.hidden;
        var badge = entry.querySelector("[data-toc-count]");
        if (badge) { badge.textContent = filtering ? matched + "/" + rows.length : String(rows.length); }
      }
    });
    if (none) { none.hidden = shown > 0; }
    count.textContent = filtering ? shown + " of " + total + " fields match." : total + " fields.";
    var params = new URLSearchParams();
    if (f.q) { params.set("q", form.elements.q.value.trim()); }
    if (f.type) { params.set("type", f.type); }
    if (f.platform) { params.set("platform", f.platform); }
    if (f.personal) { params.set("personal", "1"); }
    var query = params.toString();
    history.replaceState(null, "", window.location.pathname + (query ? "?" + query : "") + window.location.hash);
  }

  var initial = new URLSearchParams(window.location.search);
  form.elements.q.value = initial.get("q") || "";
  form.elements.type.value = initial.get("type") || "";
  form.elements.platform.value = initial.get("platform") || "";
  form.elements.personal.checked = initial.get("personal") === "1";
  form.hidden = false;
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", function (event) { event.preventDefault(); apply(); });
  apply();
})();
