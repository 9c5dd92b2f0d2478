// The till's receipt panel: after each completed sale it shows the receipt and whether it printed,
// with Retry print, Print in browser and Reprint. Listens for `comolor:sale-completed` from the till.
(function () {
  "use strict";

  var PLACEHOLDER = "987654321";
  var FAST_POLL_MS = 1000;
  var SLOW_POLL_MS = 10000; // a failed job is retried by the worker: keep the cashier informed
  var panel, statusLine, preview, retryButton, numberLabel;
  var saleId = null;
  var pollTimer = null;

  function url(name, id) {
    return panel.dataset[name].replace(PLACEHOLDER, String(id));
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) return meta.content;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function showStatus(data) {
    var text = data.message || data.error || "";
    statusLine.dataset.status = data.status || "none";
    statusLine.classList.remove("is-open");
    if (data.status === "failed" && data.printer) {
      // What happened, at a glance; the printer's reason (often five lines on a tablet) folds to two
      // and opens on a tap, so the buttons below stay in sight.
      var head = document.createElement("strong");
      head.textContent = "Not printed on " + data.printer + ".";
      var reason = document.createElement("span");
      reason.className = "receipt-status-reason";
      reason.textContent = text;
      statusLine.replaceChildren(head, " ", reason);
      statusLine.title = text;
    } else {
      statusLine.textContent = text;
      statusLine.removeAttribute("title");
    }
    retryButton.hidden = !(data.status === "failed" || data.status === "none");
  }

  function schedulePoll(status) {
    clearTimeout(pollTimer);
    if (status === "queued" || status === "printing") {
      pollTimer = setTimeout(poll, FAST_POLL_MS);
    } else if (status === "failed" || status === "none") {
      pollTimer = setTimeout(poll, SLOW_POLL_MS);
    }
  }

  function poll() {
    var id = saleId;
    if (id === null) return;
    fetch(url("statusUrl", id), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (id !== saleId) return;
        showStatus(data);
        schedulePoll(data.status);
      })
      .catch(function () {
        if (id !== saleId) return;
        showStatus({ status: "failed", message: "Cannot reach the server to check the printer. Retrying…" });
        schedulePoll("failed");
      });
  }

  function post(name) {
    var id = saleId;
    if (id === null) return;
    showStatus({ status: "printing", message: "Sending to the printer…" });
    fetch(url(name, id), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" }
    })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (id !== saleId) return;
        if (data.success === false) {
          showStatus({ status: "failed", message: data.error });
        } else {
          showStatus(data);
          schedulePoll(data.status);
        }
      })
      .catch(function () {
        showStatus({ status: "failed", message: "Cannot reach the server. Check the connection, then try again." });
      });
  }

  function printInBrowser() {
    if (saleId === null) return;
    var win = window.open(url("htmlUrl", saleId) + "?print=1", "_blank");
    if (!win) {
      showStatus({ status: "failed", message: "The browser blocked the receipt window: allow pop-ups for this site." });
    }
  }

  function show(detail) {
    if (!detail || detail.sale_id === undefined || detail.sale_id === null) return;
    saleId = detail.sale_id;
    numberLabel.textContent = detail.receipt_number || "";
    preview.src = url("previewUrl", saleId) + "?v=" + Date.now();
    panel.hidden = false;
    showStatus({ status: "queued", message: "Sending the receipt to the printer…" });
    poll();
  }

  function hide() {
    clearTimeout(pollTimer);
    saleId = null;
    panel.hidden = true;
  }

  function init() {
    panel = document.getElementById("receipt-panel");
    if (!panel) return;
    statusLine = document.getElementById("receipt-status");
    preview = document.getElementById("receipt-preview");
    retryButton = document.getElementById("receipt-retry");
    numberLabel = document.getElementById("receipt-number");
    statusLine.addEventListener("click", function () { statusLine.classList.toggle("is-open"); });
    retryButton.addEventListener("click", function () { post("printUrl"); });
    document.getElementById("receipt-reprint").addEventListener("click", function () { post("reprintUrl"); });
    document.getElementById("receipt-browser").addEventListener("click", printInBrowser);
    document.getElementById("receipt-close").addEventListener("click", hide);
    document.addEventListener("comolor:sale-completed", function (event) { show(event.detail); });
  }

  window.ComolorReceipt = { show: show, hide: hide };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
