/* The shift pages by keyboard: Esc follows the page's way back (the link marked data-esc). */
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    const back = document.querySelector("a[data-esc]");
    if (back) {
      event.preventDefault();
      window.location.assign(back.href);
    }
  });
})();
