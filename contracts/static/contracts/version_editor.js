// The version editor (form[data-version-editor]): no live check may be cut short by the form's own submit.
//
// Pressing a submit button blurs the textarea, whose `change` schedules a check that would start while the
// browser navigates away; the navigation aborts it and htmx logs htmx:afterRequest / htmx:sendAbort as
// console errors (the newcomer walkthrough's F25). So once the form is submitting no new check starts, and a
// check already running is let finish (at most CHECK_WAIT_MS) before the submit goes ahead.
(function () {
  "use strict";

  var CHECK_WAIT_MS = 3000;
  var running = 0;        // checks sent and not yet answered
  var pending = null;     // a submit held back until the running check answers: {form, submitter}
  var releasing = false;  // the held-back submit being sent again: let it through

  function editorOf(node) {
    return node && node.closest ? node.closest("form[data-version-editor]") : null;
  }

  function release() {
    if (!pending) { return; }
    var held = pending;
    pending = null;
    releasing = true;
    try {
      if (held.submitter) { held.form.requestSubmit(held.submitter); } else { held.form.requestSubmit(); }
    } finally {
      releasing = false;
    }
  }

  // htmx asks before every request (before it cancels a running one for hx-sync): refuse while submitting.
  document.addEventListener("htmx:confirm", function (event) {
    var form = editorOf(event.target);
    if (form && form.hasAttribute("data-submitting")) { event.preventDefault(); }
  });

  document.addEventListener("htmx:beforeSend", function (event) {
    if (editorOf(event.target)) { running += 1; }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (!editorOf(event.target)) { return; }
    running = Math.max(0, running - 1);
    if (running === 0) { release(); }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-version-editor]")) { return; }
    form.setAttribute("data-submitting", "");
    if (running > 0 && !releasing) {
      event.preventDefault();
      pending = { form: form, submitter: event.submitter || null };
      window.setTimeout(release, CHECK_WAIT_MS);
    }
  });

  // Back from the next page (the browser's page cache): the form is editable again, so is its check.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-version-editor][data-submitting]").forEach(function (form) {
      form.removeAttribute("data-submitting");
    });
  });
})();
