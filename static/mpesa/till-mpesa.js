/* The till's M-Pesa payment: takes over `comolor:mpesa-requested` from till.js, sends the prompt
 * (a new sale through /cashier/create-sale, or a pending one through /cashier/sales/<id>/mpesa),
 * polls /cashier/check-mpesa-payment/<id> every second until the answer or the timeout, shows the
 * state big, offers the next steps (send again, change phone or split, cash, cancel) and fires
 * `comolor:sale-completed` once the sale is paid. Vanilla JS; uses window.ComolorTill (till.js). */
(function () {
  "use strict";

  var PLACEHOLDER = "987654321";
  var POLL_MS = 1000;
  var TITLES = {
    sending: "Sending the prompt…",
    waiting: "Waiting for the customer's PIN",
    paid: "Paid",
    partly_paid: "Part paid by M-Pesa",
    failed: "Not paid",
    timeout: "No answer yet",
    review: "Money received: needs a manager",
    cancelled: "Sale cancelled",
    none: "No prompt sent",
  };
  var KINDS = { paid: "success", partly_paid: "success", failed: "error", timeout: "warning", review: "warning",
    cancelled: "warning" };
  // Which next steps each state offers.
  var ACTIONS = {
    sending: [],
    waiting: ["cash", "cancel"],
    paid: ["close"],
    partly_paid: ["resend", "split", "cash", "close"],
    failed: ["resend", "split", "cash", "cancel", "close"],
    timeout: ["check", "cash", "cancel", "close"],
    review: ["cash", "cancel", "close"],
    cancelled: ["close"],
    none: ["resend", "split", "cash", "cancel", "close"],
  };

  var panel, el = {};
  var current = { saleId: null, phone: "", status: "", shown: "", deadline: 0 };
  var pollTimer = null, clockTimer = null, busy = false;

  function till() { return window.ComolorTill; }
  function url(name, id) { return panel.dataset[name].replace(PLACEHOLDER, String(id)); }

  function show(status, message, amountText) {
    panel.hidden = false;
    current.status = status;
    el.state.dataset.status = status;
    till().setText(el.title, TITLES[status] || status);
    till().setText(el.message, message || "");
    if (amountText !== undefined) till().setText(el.amount, amountText);
    var offered = ACTIONS[status] || ["close"];
    panel.querySelectorAll("[data-mpesa]").forEach(function (button) {
      button.hidden = offered.indexOf(button.dataset.mpesa) < 0;
    });
    if (status !== "failed" && status !== "none" && status !== "partly_paid") el.split.hidden = true;
    renderClock();
    // The till's message line is always in sight; the panel may sit below the fold on a small screen.
    if (status + message !== current.shown) {
      current.shown = status + message;
      till().showMessage("M-Pesa: " + (message || TITLES[status]), KINDS[status] || "info");
      if (panel.scrollIntoView) panel.scrollIntoView({ block: "nearest" });
    }
  }

  function renderClock() {
    if (current.status !== "waiting" || !current.deadline) { el.clock.textContent = ""; return; }
    el.clock.textContent = Math.max(0, Math.ceil((current.deadline - Date.now()) / 1000)) + " s";
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    clearInterval(clockTimer);
    pollTimer = clockTimer = null;
  }

  function startPolling(timeoutSeconds) {
    stopPolling();
    current.deadline = Date.now() + (timeoutSeconds || 90) * 1000;
    clockTimer = setInterval(renderClock, 250);
    poll();
  }

  function poll() {
    var saleId = current.saleId;
    till().fetchJSON(url("checkUrl", saleId)).then(function (result) {
      if (saleId !== current.saleId) return;  // a newer sale took over the panel
      if (!result.ok) {
        // A network blip: keep trying until our own deadline.
        if (Date.now() < current.deadline) pollTimer = setTimeout(poll, POLL_MS);
        else show("timeout", result.data.error || "The server does not answer. Check the network.");
        return;
      }
      onStatus(result.data);
    });
  }

  function onStatus(data) {
    var to = current.maskedPhone ? " to " + current.maskedPhone : "";
    // The balance is the till's big figure already: this line says what was asked of whom.
    var amountText = data.mpesa_amount ? "KES " + data.mpesa_amount + to : undefined;
    if (data.status === "waiting" && Date.now() < current.deadline) {
      show("waiting", data.message, amountText);
      pollTimer = setTimeout(poll, POLL_MS);
      return;
    }
    stopPolling();
    if (data.status === "waiting") {
      show("timeout", "No answer from M-Pesa in time. Ask the customer whether money left their account: " +
        "if it did, press Check again; otherwise take cash or cancel the sale.", amountText);
      return;
    }
    show(data.status, data.message, amountText);
    if (data.status === "paid") till().announcePaid(current.saleId, "mpesa");
    else refreshSale();
  }

  // The till's own view of the sale (pending: balance, cash button) follows the server's.
  function refreshSale() {
    var saleId = current.saleId;
    till().fetchJSON(till().url("sale", saleId)).then(function (result) {
      if (result.ok && saleId === current.saleId && result.data.status === "pending") till().showSale(result.data);
    });
  }

  function started(data) {
    current.saleId = data.sale_id;
    current.maskedPhone = data.phone;
    show("waiting", data.message, "KES " + data.mpesa_amount + " to " + data.phone);
    startPolling(data.timeout_after);
  }

  function refused(data) {
    // The prompt did not go out; a pending sale (if one was made) waits for another try.
    if (data.sale) {
      current.saleId = data.sale.sale_id;
      till().showSale(data.sale);
    }
    // error: why no prompt went out; message (when a sale was kept): what happens to the sale.
    var text = [data.error, data.message].filter(Boolean).join(" ");
    show(current.saleId ? "failed" : "none", text || "The prompt was not sent. Try again.");
    if (!current.saleId) till().showMessage(text || "The prompt was not sent.", "error");
  }

  function send(phone, amount) {
    if (busy) return;
    busy = true;
    show("sending", "Sending the prompt to " + phone + "…", "");
    var request;
    if (current.saleId) {
      request = till().fetchJSON(url("startUrl", current.saleId), {
        method: "POST", body: { phone: phone, amount: amount || null },
      });
    } else {
      request = till().fetchJSON(till().url("createSale"), {
        method: "POST", body: Object.assign(till().cart(), { payment_method: "mpesa", customer_phone: phone }),
      });
    }
    request.then(function (result) {
      busy = false;
      if (result.ok && result.data.success) {
        if (result.data.sale) till().showSale(result.data.sale);
        started(result.data);
      } else {
        refused(result.data);
      }
    });
  }

  function onRequested(event) {
    var detail = event.detail || {};
    event.preventDefault();  // tells till.js the M-Pesa payment is taken care of
    stopPolling();
    current = { saleId: detail.sale_id || null, phone: detail.phone || "", status: "", shown: "", deadline: 0 };
    el.phone.value = current.phone;
    el.part.value = "";
    send(current.phone);
  }

  function onAction(event) {
    var action = event.target.closest("[data-mpesa]");
    if (!action || busy) return;
    switch (action.dataset.mpesa) {
      case "resend":
        send(el.phone.value.trim() || current.phone, el.split.hidden ? null : el.part.value.trim());
        break;
      case "split":
        el.split.hidden = false;
        el.part.focus();
        break;
      case "check":
        startPolling(15);
        break;
      case "cash":
        stopPolling();
        panel.hidden = true;
        document.dispatchEvent(new KeyboardEvent("keydown", { key: "F2", bubbles: true }));
        break;
      case "cancel":
        cancelSale();
        break;
      case "close":
        stopPolling();
        panel.hidden = true;
        break;
      default:
    }
  }

  function cancelSale() {
    if (!current.saleId || !window.confirm("Cancel this sale? Any money already paid stays on record for a refund.")) return;
    busy = true;
    till().fetchJSON(till().url("saleCancel", current.saleId), { method: "POST", body: { reason: "M-Pesa not paid" } })
      .then(function (result) {
        busy = false;
        if (!result.ok || !result.data.success) { show(current.status, result.data.error || "Could not cancel the sale."); return; }
        stopPolling();
        panel.hidden = true;
        till().reset();
        till().showMessage(result.data.message || "Sale " + result.data.receipt_number + " cancelled.", "warning");
      });
  }

  function onCompleted(event) {
    // Any completed sale (cash too) closes the panel; a receipt panel takes over.
    var detail = event.detail || {};
    if (detail.source !== "mpesa") { stopPolling(); panel.hidden = true; current.saleId = null; }
  }

  function init() {
    panel = document.getElementById("mpesa-panel");
    if (!panel || !window.ComolorTill) return;
    el = {
      state: document.getElementById("mpesa-state"),
      title: document.getElementById("mpesa-title"),
      amount: document.getElementById("mpesa-amount"),
      clock: document.getElementById("mpesa-clock"),
      message: document.getElementById("mpesa-message"),
      split: document.getElementById("mpesa-split"),
      phone: document.getElementById("mpesa-phone"),
      part: document.getElementById("mpesa-part"),
    };
    document.getElementById("mpesa-actions").addEventListener("click", onAction);
    document.addEventListener("comolor:mpesa-requested", onRequested);
    document.addEventListener("comolor:sale-completed", onCompleted);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
