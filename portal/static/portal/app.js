// Small conveniences, no dependencies: confirm risky buttons, copy a secret, load a chosen file into its textarea,
// and the shared conventions that replace inline handlers (the Content-Security-Policy allows no inline script):
//   data-autosubmit       on a <select>/<input>: submits its form on change
//   data-select-on-click  on a readonly input: selects its text on click
//   data-check-all        on a checkbox: checks or unchecks every input[name=ids] checkbox in its form
//   data-poll-when-visible on an htmx-polled element: skips its requests while the tab is hidden
//                         (instead of an hx-trigger filter, which htmx would have to eval)
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
    var selectable = event.target.closest("[data-select-on-click]");
    if (selectable && selectable.select) {
      selectable.select();
    }
    var copy = event.target.closest("[data-copy-from]");
    if (copy) {
      var field = document.getElementById(copy.getAttribute("data-copy-from"));
      field.select();
      if (navigator.clipboard) {
        navigator.clipboard.writeText(field.value).then(function () { copy.textContent = "Copied"; });
      }
    }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail && event.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-poll-when-visible") && document.visibilityState !== "visible") {
      event.preventDefault();
    }
  });

  // Choosing a schema or mapping file fills the textarea next to it, so the live check and the
  // textarea always show what will be saved. The file input is then cleared (the text is the truth).
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (!field.matches) { return; }
    if (field.matches("[data-autosubmit]") && field.form) {
      // requestSubmit fires the submit event (htmx and validation see it); submit() is the fallback
      if (field.form.requestSubmit) { field.form.requestSubmit(); } else { field.form.submit(); }
    }
    if (field.matches("[data-check-all]") && field.form) {
      field.form.querySelectorAll("input[type=checkbox][name=ids]").forEach(function (box) {
        box.checked = field.checked;
      });
    }
  });

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("input[type=file][name$='_file']")) { return; }
    var file = input.files && input.files[0];
    var textarea = input.form && input.form.querySelector("textarea[name='" + input.name.replace(/_file$/, "") + "']");
    if (!file || !textarea) { return; }
    file.text().then(function (text) {
      textarea.value = text;
      input.value = "";
      textarea.dispatchEvent(new Event("change", { bubbles: true }));
    });
  });
})();
