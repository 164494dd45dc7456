// A quarantined record's payload: bring the first line the error names into view inside its scrolling box.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.querySelector(".payload-lines");
    var first = box && box.querySelector(".jl-fail, .jl-missing");
    if (first && first.offsetTop > box.clientHeight / 2) {
      box.scrollTop = first.offsetTop - box.offsetTop - box.clientHeight / 3;
    }
  });
})();
