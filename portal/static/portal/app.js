// Small conveniences, no dependencies: confirm risky buttons, copy a secret, load a chosen file into its textarea.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
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

  // Choosing a schema or mapping file fills the textarea next to it, so the live check and the
  // textarea always show what will be saved. The file input is then cleared (the text is the truth).
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
