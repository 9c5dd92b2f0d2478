/* "Customer paid to till" (F6): the customer paid the shop's till from their phone and shows the
 * SMS. The cashier types its M-Pesa code, or picks the payment from this shop's unclaimed ones (a
 * list refreshed every few seconds), and the server checks it against Safaricom's own confirmation
 * (POST /cashier/sales/<id>/mpesa-claim): the SMS itself proves nothing. A code Safaricom has not
 * confirmed yet is waited for (GET …/mpesa-claim/<claim_id>) with a countdown. Paid fires
 * `comolor:sale-completed` like every other payment; part paid leaves the balance on the till.
 * Takes over `comolor:claim-requested` from till.js. Vanilla JS; uses window.ComolorTill. */
(function () {
  "use strict";

  var SALE_PLACEHOLDER = "987654321";
  var CLAIM_PLACEHOLDER = "123456789";
  var CODE = /^[A-Z][A-Z0-9]{9}$/;
  var LIST_EVERY_MS = 4000;
  var POLL_MS = 1000;
  // Each state: the title, the colour of the state band (the M-Pesa panel's), whether the code box
  // and the list are offered, and the next steps.
  var STATES = {
    entry: { title: "Customer paid to till", band: "none", entry: true, actions: ["back"] },
    checking: { title: "Checking the code…", band: "sending", entry: false, actions: [] },
    waiting: { title: "Waiting for Safaricom", band: "waiting", entry: false, actions: ["back"] },
    paid: { title: "Paid", band: "paid", entry: false, actions: [] },
    partly_paid: { title: "Part paid by M-Pesa", band: "partly_paid", entry: true, actions: ["cash", "prompt", "back"] },
    refused: { title: "Code refused", band: "failed", entry: true, actions: ["cash", "prompt", "cancel", "back"] },
    expired: { title: "Not confirmed", band: "timeout", entry: true, actions: ["cash", "prompt", "cancel", "back"] },
    error: { title: "Not checked", band: "failed", entry: true, actions: ["back"] },
  };

  var panel, el = {};
  var current = { saleId: null, due: "", state: "", claimId: null, code: "", deadline: 0 };
  var listTimer = null, listRun = 0, pollTimer = null, clockTimer = null, busy = false, payments = [];

  function till() { return window.ComolorTill; }
  function saleUrl(name, saleId, claimId) {
    return panel.dataset[name].replace(SALE_PLACEHOLDER, String(saleId)).replace(CLAIM_PLACEHOLDER, String(claimId));
  }
  function shillings(amount) {
    // What the customer had to send: M-Pesa moves whole shillings, so a balance in cents is rounded up.
    return Math.ceil(parseFloat(amount || "0") - 0.001);
  }
  function kes(amount) { return "KES " + Number(amount).toLocaleString("en-KE", { maximumFractionDigits: 2 }); }

  // A code as the cashier types or pastes it (the whole SMS will do): upper case, its first word.
  function normalise(text) {
    var words = String(text || "").toUpperCase().split(/[^A-Z0-9]+/).filter(Boolean);
    var code = words.filter(function (word) { return CODE.test(word); })[0];
    return code || words.join("").slice(0, 10);
  }

  function hint(text, kind) {
    el.hint.textContent = text;
    el.hint.dataset.kind = kind || "info";
  }

  function checkTyped() {
    var code = normalise(el.code.value);
    if (el.code.value !== code) el.code.value = code;
    if (!code) hint("10 letters and digits, first word of the SMS", "info");
    else if (/^[0-9]/.test(code)) hint("An M-Pesa code starts with a letter, e.g. QK12AB34CD.", "error");
    else if (code.length < 10) hint(code.length + " of 10 characters", "info");
    else hint("Looks right: press Enter to check it.", "ok");
    return code;
  }

  // ---- states -------------------------------------------------------------------------------

  function show(state, message, amountText) {
    var spec = STATES[state];
    panel.hidden = false;
    current.state = state;
    panel.dataset.state = state;
    el.state.dataset.status = spec.band;
    till().setText(el.title, spec.title);
    if (amountText !== undefined) till().setText(el.amount, amountText);
    till().setText(el.message, message || "");
    el.message.hidden = !message;
    el.message.dataset.kind = spec.band;
    el.entry.hidden = !spec.entry;
    panel.querySelectorAll("#claim-actions [data-claim]").forEach(function (button) {
      var action = button.dataset.claim;
      button.hidden = spec.actions.indexOf(action) < 0 || (action === "cancel" && !current.saleId);
    });
    renderClock();
    if (spec.entry) startList(); else stopList();
    if (panel.scrollIntoView) panel.scrollIntoView({ block: "nearest" });
  }

  function dueText() {
    var to = panel.dataset.tillNumber ? " to till " + panel.dataset.tillNumber : "";
    return kes(shillings(current.due)) + " due" + to;
  }

  function codeText() {
    return current.code + " · " + kes(shillings(current.due));
  }

  function renderClock() {
    if (current.state !== "waiting" || !current.deadline) { el.clock.textContent = ""; return; }
    el.clock.textContent = Math.max(0, Math.ceil((current.deadline - Date.now()) / 1000)) + " s";
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    clearInterval(clockTimer);
    pollTimer = clockTimer = null;
  }

  function close() {
    stopPolling();
    stopList();
    panel.hidden = true;
    busy = false;
  }

  // ---- the list of unclaimed payments ----------------------------------------------------------

  // One refresh loop at a time: a stopped loop's answer still in flight is dropped.
  function stopList() {
    clearTimeout(listTimer);
    listTimer = null;
    listRun += 1;
  }

  function startList() {
    if (listTimer !== null) return;
    listTimer = 0;
    loadList(listRun);
  }

  function loadList(run) {
    till().fetchJSON(panel.dataset.unclaimedUrl).then(function (result) {
      if (run !== listRun) return;
      if (result.ok) {
        payments = result.data.payments || [];
        renderList();
        el.listNote.textContent = payments.length + " unclaimed · live";
      } else {
        el.listNote.textContent = result.data.error || "cannot load the list: retrying";
      }
      listTimer = setTimeout(function () { loadList(run); }, LIST_EVERY_MS);
    });
  }

  function renderList() {
    var due = shillings(current.due);
    // The payments of exactly the amount due first: the customer at the counter is most likely one.
    var ordered = payments.filter(function (p) { return shillings(p.amount) === due; })
      .concat(payments.filter(function (p) { return shillings(p.amount) !== due; }));
    var focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.code : null;
    el.list.replaceChildren();
    if (!payments.length) {
      var empty = document.createElement("li");
      empty.className = "claim-empty";
      empty.textContent = "No unclaimed payment to this shop in the last minutes.";
      el.list.append(empty);
      return;
    }
    ordered.forEach(function (payment) {
      var item = document.createElement("li");
      var button = document.createElement("button");
      var matches = shillings(payment.amount) === due;
      button.type = "button";
      button.className = "claim-pick" + (matches ? " is-match" : "");
      button.dataset.code = payment.receipt_number;
      button.setAttribute("aria-label", kes(payment.amount) + " at " + payment.time_label + " from " +
        (payment.first_name || "a customer") + ", " + payment.phone + (matches ? ", the amount due" : ""));
      var amount = document.createElement("span");
      amount.className = "claim-pick-amount";
      amount.textContent = kes(payment.amount);
      var when = document.createElement("span");
      when.className = "claim-pick-time";
      when.textContent = payment.time_label;
      var who = document.createElement("span");
      who.className = "claim-pick-who";
      who.textContent = [payment.first_name, payment.phone].filter(Boolean).join(" · ");
      var code = document.createElement("span");
      code.className = "claim-pick-code";
      code.textContent = payment.receipt_number;
      button.append(amount, when, who, code);
      item.append(button);
      el.list.append(item);
      if (focused === payment.receipt_number) button.focus();
    });
  }

  function onListKey(event) {
    var button = event.target.closest(".claim-pick");
    if (!button) return;
    var buttons = Array.prototype.slice.call(el.list.querySelectorAll(".claim-pick"));
    var index = buttons.indexOf(button);
    if (event.key === "ArrowDown" && index < buttons.length - 1) { event.preventDefault(); buttons[index + 1].focus(); }
    if (event.key === "ArrowUp") { event.preventDefault(); (index > 0 ? buttons[index - 1] : el.code).focus(); }
  }

  // ---- claiming -----------------------------------------------------------------------------

  function submit(code) {
    if (busy) return;
    if (!CODE.test(code)) {
      hint(code ? "That is not an M-Pesa code: 10 letters and digits, starting with a letter, e.g. QK12AB34CD."
        : "Type the M-Pesa code from the customer's SMS, or pick the payment below.", "error");
      till().beep();
      el.code.focus();
      return;
    }
    busy = true;
    current.code = code;
    show("checking", "", codeText());
    ensureSale().then(function (saleId) {
      if (saleId === null) { busy = false; return null; }
      return till().fetchJSON(saleUrl("claimUrl", saleId), { method: "POST", body: { code: code } }).then(function (result) {
        busy = false;
        if (saleId !== current.saleId) return;
        if (panel.hidden) {
          // The cashier moved on (cash, a prompt) while the code was checked: a payment still counts.
          if (result.data.status === "paid") till().announcePaid(saleId, "claim");
          return;
        }
        if (result.ok && result.data.success) onAnswer(result.data);
        else refused(result.data.error || "The code was not accepted. Try again.");
      });
    });
  }

  // A cart becomes a pending sale first: the claim is for one sale, and the sale keeps the code's
  // outcome if the cashier has to take the money another way.
  function ensureSale() {
    if (current.saleId) return Promise.resolve(current.saleId);
    var body = Object.assign(till().cart(), { payment_method: "later" });
    return till().fetchJSON(till().url("createSale"), { method: "POST", body: body }).then(function (result) {
      if (!result.ok || !result.data.success) {
        show("error", result.data.error || "The sale was not saved. Try again.", dueText());
        till().beep();
        return null;
      }
      current.saleId = result.data.sale_id;
      current.due = result.data.sale.balance_due;
      till().showSale(result.data.sale);
      return current.saleId;
    });
  }

  function refused(message, state) {
    show(state || "refused", message, codeText());
    hint("Compare with the customer's SMS, or pick the payment below.", "info");
    till().beep();
    el.code.select();
    el.code.focus();
  }

  function onAnswer(data) {
    var code = data.mpesa_receipt || current.code;
    if (data.status === "waiting") {
      stopPolling();
      current.claimId = data.claim_id;
      current.deadline = Date.now() + (data.timeout_after || 60) * 1000;
      show("waiting", data.message, codeText());
      clockTimer = setInterval(renderClock, 250);
      pollTimer = setTimeout(poll, POLL_MS);
      return;
    }
    stopPolling();
    if (data.status === "paid") {
      show("paid", data.message, code + " · " + kes(data.amount_paid));
      till().announcePaid(current.saleId, "claim");
    } else if (data.status === "partly_paid") {
      current.due = data.balance_due;
      el.code.value = "";
      checkTyped();
      show("partly_paid", data.message, code + " paid · " + kes(data.balance_due) + " still to take");
      refreshSale();
      el.code.focus();
    } else if (data.status === "expired") {
      refused(data.message, "expired");
    } else {
      refused(data.message || data.error);
    }
  }

  function poll() {
    var saleId = current.saleId, claimId = current.claimId;
    till().fetchJSON(saleUrl("statusUrl", saleId, claimId)).then(function (result) {
      if (panel.hidden || saleId !== current.saleId || claimId !== current.claimId || current.state !== "waiting") return;
      if (!result.ok) {
        // A network blip: the claim waits on the server; keep asking.
        till().setText(el.message, result.data.error || "No answer from the server: still trying.");
        pollTimer = setTimeout(poll, POLL_MS);
        return;
      }
      if (result.data.status === "waiting") pollTimer = setTimeout(poll, POLL_MS);
      else onAnswer(result.data);
    });
  }

  // The till's own view of the pending sale (balance due) follows the server's.
  function refreshSale() {
    var saleId = current.saleId;
    till().fetchJSON(till().url("sale", saleId)).then(function (result) {
      if (!result.ok || saleId !== current.saleId || result.data.status !== "pending") return;
      till().showSale(result.data);
      if (STATES[current.state].entry) el.code.focus();
    });
  }

  function cancelSale() {
    if (!current.saleId || !window.confirm("Cancel this sale? The items go back on the shelf.")) return;
    busy = true;
    till().fetchJSON(till().url("saleCancel", current.saleId), { method: "POST", body: { reason: "Till payment not confirmed" } })
      .then(function (result) {
        busy = false;
        if (!result.ok || !result.data.success) { till().showMessage(result.data.error || "Could not cancel the sale.", "error"); return; }
        close();
        till().reset();
        till().showMessage(result.data.message || "Sale " + result.data.receipt_number + " cancelled.", "warning");
      });
  }

  // ---- wiring -------------------------------------------------------------------------------

  function onRequested(event) {
    var detail = event.detail || {};
    event.preventDefault();  // tells till.js the till payment is taken care of
    if (!panel.hidden && (detail.sale_id || null) === current.saleId && STATES[current.state].entry) {
      el.code.focus();
      return;
    }
    stopPolling();
    current = { saleId: detail.sale_id || null, due: detail.balance_due, state: "", claimId: null, code: "", deadline: 0 };
    el.code.value = "";
    checkTyped();
    payments = [];
    el.list.replaceChildren();
    el.listNote.textContent = "";
    show("entry", "", dueText());
    el.code.focus();
  }

  function onAction(event) {
    var button = event.target.closest("[data-claim]");
    if (!button || busy) return;
    switch (button.dataset.claim) {
      case "check":
        submit(checkTyped());
        break;
      case "cash":
        close();
        document.dispatchEvent(new KeyboardEvent("keydown", { key: "F2", bubbles: true }));
        break;
      case "prompt":
        close();
        document.dispatchEvent(new KeyboardEvent("keydown", { key: "F4", bubbles: true }));
        break;
      case "cancel":
        cancelSale();
        break;
      case "back":
        close();
        till().back();
        break;
      default:
    }
  }

  function onCodeKey(event) {
    if (event.key === "Enter") { event.preventDefault(); submit(checkTyped()); }
    if (event.key === "ArrowDown") {
      var first = el.list.querySelector(".claim-pick");
      if (first) { event.preventDefault(); first.focus(); }
    }
  }

  function init() {
    panel = document.getElementById("claim-panel");
    if (!panel || !window.ComolorTill) return;
    el = {
      state: document.getElementById("claim-state"),
      title: document.getElementById("claim-title"),
      amount: document.getElementById("claim-amount"),
      clock: document.getElementById("claim-clock"),
      message: document.getElementById("claim-message"),
      entry: document.getElementById("claim-entry"),
      code: document.getElementById("claim-code"),
      hint: document.getElementById("claim-hint"),
      list: document.getElementById("claim-list"),
      listNote: document.getElementById("claim-list-note"),
    };
    panel.addEventListener("click", function (event) {
      var pick = event.target.closest(".claim-pick");
      if (pick && !busy) {
        el.code.value = pick.dataset.code;
        submit(checkTyped());
        return;
      }
      onAction(event);
    });
    el.code.addEventListener("input", checkTyped);
    el.code.addEventListener("keydown", onCodeKey);
    el.list.addEventListener("keydown", onListKey);
    // Esc is Back wherever the focus is while the panel is open (the till's own Esc would put the sale aside).
    document.addEventListener("keydown", function (event) {
      if (event.key !== "Escape" || panel.hidden || busy) return;
      event.preventDefault();
      event.stopPropagation();
      close();
      till().back();
    }, true);
    document.addEventListener("comolor:claim-requested", onRequested);
    // Paid (this way or another), cash, a prompt, a new sale: the till has moved on and the panel with it.
    new MutationObserver(function () {
      var mode = document.body.dataset.tillMode;
      if (!panel.hidden && mode !== "claim" && mode !== "pending") close();
    }).observe(document.body, { attributes: true, attributeFilter: ["data-till-mode"] });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
