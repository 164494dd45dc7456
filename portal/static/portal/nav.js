// The site menu on narrow screens: below ~768 px the nav lists fold behind a "Menu" button.
// Folding starts only once this script runs (it marks the header), so without JavaScript the
// lists simply wrap and stay reachable.
(function () {
  "use strict";

  function header() { return document.querySelector(".site-header"); }

  function setOpen(button, open) {
    var site = header();
    if (!site) { return; }
    site.classList.toggle("nav-open", open);
    button.setAttribute("aria-expanded", open ? "true" : "false");
  }

  document.addEventListener("DOMContentLoaded", function () {
    var site = header();
    if (site && site.querySelector("[data-nav-toggle]")) { site.classList.add("nav-collapsible"); }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-nav-toggle]");
    if (button) {
      setOpen(button, button.getAttribute("aria-expanded") !== "true");
    }
  });

  // Escape closes an open menu and gives the focus back to its button.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    var site = header();
    var button = site && site.classList.contains("nav-open") && site.querySelector("[data-nav-toggle]");
    if (button) {
      setOpen(button, false);
      button.focus();
    }
  });
})();
