/* Comolor till: scan, cart, cash. M-Pesa and receipts plug in through window.ComolorTill and
 * DOM events on document (see notes/contracts.md):
 *   comolor:mpesa-requested  {items, total, phone, customer_phone, payment_method, sale_id, balance_due}
 *       cancelable: the M-Pesa script calls event.preventDefault() to take the payment over.
 *   comolor:claim-requested  {items, total, sale_id, balance_due}: "customer paid to till" (F6), cancelable
 *       the same way (mpesa/till-claim.js).
 *   comolor:sale-completed   {sale_id, receipt_number, total, change_due, payment_method, receipt_url, sale}
 * Money is held in integer cents; the server's figures replace the till's once a sale exists. */
(function () {
  "use strict";

  const state = {
    lines: [],          // {id, name, sku, barcode, price (cents), taxRate, stock, quantity}
    selected: -1,       // highlighted cart line (keyboard)
    mode: "cart",       // cart | cash | mpesa | claim | pending | done
    sale: null,         // the server's sale once it exists (pending or done)
    change: 0,          // change due of the completed sale, cents
    busy: false,
    results: [],
    resultsQuery: "",
    active: -1,
    escArmedUntil: 0,
    doneAt: 0,          // a second Enter right after paying must not hide the change due
  };
  const MAX_CHANGE = 1000000;  // KES 10,000 of change means a mistyped amount or a scan into the cash box
  let config = { urls: {} };
  let el = {};
  let searchTimer = null;
  let searchSeq = 0;
  let messageTimer = null;

  // ---- money --------------------------------------------------------------------------------
  function parseCents(value) {
    if (typeof value === "number") return Math.round(value * 100);
    const text = String(value || "").replace(/[,\s]/g, "");
    if (!/^\d+(\.\d{0,2})?$/.test(text)) return NaN;
    const [whole, frac = ""] = text.split(".");
    return Number(whole) * 100 + Number((frac + "00").slice(0, 2));
  }
  function plain(cents) {
    const sign = cents < 0 ? "-" : "";
    const abs = Math.abs(cents);
    const whole = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return sign + whole + "." + String(abs % 100).padStart(2, "0");
  }
  function kes(cents) { return "KES " + plain(cents); }
  function decimal(cents) { return (cents / 100).toFixed(2); }
  // VAT inside a VAT-inclusive amount, as the server does it: gross × rate / (100 + rate), half up.
  function vatIn(grossCents, rate) {
    const rate100 = Math.round(parseFloat(rate || "0") * 100);
    if (!rate100) return 0;
    const num = grossCents * rate100;
    const den = 10000 + rate100;
    return Math.floor((2 * num + den) / (2 * den));
  }

  // ---- server -------------------------------------------------------------------------------
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
  async function fetchJSON(url, options) {
    const opts = Object.assign({ method: "GET", credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (opts.body !== undefined && typeof opts.body !== "string") {
      opts.body = JSON.stringify(opts.body);
      opts.headers["Content-Type"] = "application/json";
    }
    if (opts.method !== "GET") opts.headers["X-CSRFToken"] = csrfToken();
    let response;
    try {
      response = await fetch(url, opts);
    } catch (err) {
      return { ok: false, status: 0, data: { success: false, error: "No connection to the server. Check the network and try again." } };
    }
    let data;
    try {
      data = await response.json();
    } catch (err) {
      data = { success: false, error: `The server answered ${response.status} without details. Try again or call a manager.` };
    }
    return { ok: response.ok, status: response.status, data };
  }
  function url(name, id) { return (config.urls[name] || "").replace("{id}", encodeURIComponent(id)); }

  // ---- messages and sound -------------------------------------------------------------------
  // "M-Pesa" never breaks at its hyphen: a line ending in "M-" reads as a typo from across the counter.
  function setText(node, text) {
    node.replaceChildren(...String(text || "").split(/(M-Pesa)/).map((part) => {
      if (part !== "M-Pesa") return document.createTextNode(part);
      const word = document.createElement("span");
      word.className = "nowrap";
      word.textContent = part;
      return word;
    }));
  }
  function showMessage(text, kind) {
    kind = kind || "info";
    clearTimeout(messageTimer);
    if (text && shownByPaymentPanel(text)) {
      // The banner is for the till's own messages; what the open M-Pesa panel already says in
      // big is not repeated above it (an error still beeps).
      clearMessage();
      if (kind === "error") beep();
      return;
    }
    setText(el.message, text);
    el.message.className = "message message-" + kind;
    el.message.hidden = !text;
    if (kind === "error") beep();
    if (kind === "info" || kind === "success") messageTimer = setTimeout(clearMessage, 6000);
  }
  function clearMessage() { el.message.hidden = true; el.message.textContent = ""; }
  function shownByPaymentPanel(text) {
    // mpesa/_till_mpesa.html hands each of its states to showMessage as "M-Pesa: <its message>".
    const panel = document.getElementById("mpesa-panel");
    if (!panel || panel.hidden) return false;
    const said = text.replace(/^M-Pesa: /, "");
    return Array.from(panel.querySelectorAll("#mpesa-title, #mpesa-message")).some((node) => node.textContent === said);
  }
  let audio = null;
  function beep() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = 330;
      gain.gain.value = 0.08;
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.18);
    } catch (err) { /* no sound on this device: the red message is enough */ }
  }

  // ---- cart ---------------------------------------------------------------------------------
  function cartTotals() {
    let total = 0, vat = 0, count = 0;
    for (const line of state.lines) {
      const gross = line.price * line.quantity;
      total += gross;
      vat += vatIn(gross, line.taxRate);
      count += line.quantity;
    }
    return { total, vat, count };
  }
  function amountDue() {
    if (state.sale) return parseCents(state.sale.balance_due);
    return cartTotals().total;
  }
  function addProduct(product, quantity) {
    if (state.mode === "done") resetSale();
    if (state.mode === "pending") {
      showMessage("This sale is waiting for payment. Take the payment, or press Esc twice to put it aside.", "error");
      return;
    }
    if (state.mode !== "cart") { showMessage("Finish or go back from the payment first (Esc).", "error"); return; }
    quantity = quantity || 1;
    let index = state.lines.findIndex((line) => line.id === product.id);
    const current = index >= 0 ? state.lines[index].quantity : 0;
    if (product.stock <= 0) {
      showMessage(`${product.name} is out of stock in this shop.`, "error");
      return;
    }
    if (current + quantity > product.stock) {
      showMessage(`Only ${product.stock} of ${product.name} in stock; ${current + quantity} wanted.`, "error");
      return;
    }
    if (index >= 0) {
      state.lines[index].quantity += quantity;
      state.lines[index].stock = product.stock;
    } else {
      state.lines.push({
        id: product.id, name: product.name, sku: product.sku, barcode: product.barcode,
        price: parseCents(product.price), taxRate: product.tax_rate, stock: product.stock, quantity,
      });
      index = state.lines.length - 1;
    }
    state.selected = index;
    clearMessage();
    render();
    flashLine(index);
  }
  function setQuantity(index, quantity) {
    const line = state.lines[index];
    if (!line || state.mode !== "cart") return;
    if (!Number.isInteger(quantity) || quantity < 0) {
      showMessage("Quantity must be a whole number.", "error");
    } else if (quantity === 0) {
      removeLine(index);
      return;
    } else if (quantity > line.stock) {
      showMessage(`Only ${line.stock} of ${line.name} in stock.`, "error");
    } else {
      line.quantity = quantity;
      clearMessage();
    }
    render();
  }
  function removeLine(index) {
    if (state.mode !== "cart" || !state.lines[index]) return;
    state.lines.splice(index, 1);
    state.selected = Math.min(state.selected, state.lines.length - 1);
    render();
  }
  function cart() {
    const totals = cartTotals();
    return {
      items: state.lines.map((line) => ({ product_id: line.id, quantity: line.quantity })),
      total: decimal(totals.total),
      count: totals.count,
    };
  }

  // ---- search and scans ---------------------------------------------------------------------
  function splitQuantity(text) {
    // "3*6161100000017" or "3*sugar": quantity 3 of the scanned or chosen item.
    const match = /^\s*(\d{1,4})\s*[*xX×]\s*(.*)$/.exec(text);
    if (match) return { quantity: Number(match[1]), query: match[2].trim() };
    return { quantity: 1, query: text.trim() };
  }
  async function search(query) {
    const seq = ++searchSeq;
    const result = await fetchJSON(url("products") + "?q=" + encodeURIComponent(query));
    if (seq !== searchSeq) return null;  // a newer keystroke won
    if (!result.ok) { showMessage(result.data.error || "Search failed.", "error"); return null; }
    return result.data;
  }
  function onSearchInput() {
    if (state.mode === "done") resetSale({ keepSearch: true });
    clearTimeout(searchTimer);
    const { query } = splitQuantity(el.search.value);
    if (!query) { closeResults(); return; }
    searchTimer = setTimeout(async () => {
      const products = await search(query);
      if (products === null || splitQuantity(el.search.value).query !== query) return;
      openResults(products, query);
    }, 180);
  }
  async function submitSearch() {
    clearTimeout(searchTimer);
    const { quantity, query } = splitQuantity(el.search.value);
    if (!query) {
      if (state.mode === "done" && Date.now() - state.doneAt > 1500) resetSale();
      return;
    }
    if (state.results.length && state.active >= 0 && state.resultsQuery === query) {
      const product = state.results[state.active];
      el.search.value = "";
      closeResults();
      addProduct(product, quantity);
      return;
    }
    // A scan: clear the box at once so the next scan can follow while this one is looked up.
    el.search.value = "";
    closeResults();
    const products = await search(query);
    if (products === null) return;
    const exact = products.find((p) => p.barcode === query || p.sku.toLowerCase() === query.toLowerCase());
    if (exact || products.length === 1) {
      addProduct(exact || products[0], quantity);
    } else if (products.length) {
      el.search.value = el.search.value || (quantity > 1 ? `${quantity}*${query}` : query);
      openResults(products, query);
      showMessage(`${products.length} items match “${query}”. Choose one with ↑ ↓ and Enter.`, "info");
    } else {
      showMessage(`No product found for “${query}”. Check the code or search by name.`, "error");
    }
  }
  function openResults(products, query) {
    state.results = products;
    state.resultsQuery = query;
    state.active = products.length ? 0 : -1;
    renderResults();
  }
  function closeResults() {
    state.results = [];
    state.resultsQuery = "";
    state.active = -1;
    renderResults();
  }
  function renderResults() {
    const list = el.results;
    list.replaceChildren();
    if (!state.resultsQuery) { list.hidden = true; el.search.setAttribute("aria-expanded", "false"); return; }
    if (!state.results.length) {
      const li = document.createElement("li");
      li.className = "result-empty";
      li.textContent = `Nothing matches “${state.resultsQuery}”`;
      list.append(li);
    }
    state.results.forEach((product, index) => {
      const li = document.createElement("li");
      li.className = "result" + (index === state.active ? " active" : "") + (product.stock <= 0 ? " out" : "");
      li.id = "till-result-" + index;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", index === state.active ? "true" : "false");
      const name = document.createElement("span");
      name.className = "result-name";
      name.textContent = product.name;
      const meta = document.createElement("span");
      meta.className = "result-meta";
      meta.textContent = `${product.sku}${product.barcode ? " · " + product.barcode : ""}`;
      const stock = document.createElement("span");
      stock.className = "result-stock";
      stock.textContent = product.stock > 0 ? `${product.stock} in stock` : "out of stock";
      const price = document.createElement("span");
      price.className = "result-price";
      price.textContent = plain(parseCents(product.price));
      li.append(name, price, meta, stock);
      li.addEventListener("mousedown", (event) => event.preventDefault());  // keep focus in the box
      li.addEventListener("click", () => {
        const { quantity } = splitQuantity(el.search.value);
        el.search.value = "";
        closeResults();
        addProduct(product, quantity);
        el.search.focus();
      });
      list.append(li);
    });
    list.hidden = false;
    el.search.setAttribute("aria-expanded", "true");
    if (state.active >= 0) {
      el.search.setAttribute("aria-activedescendant", "till-result-" + state.active);
      const active = list.children[state.active];
      if (active && active.scrollIntoView) active.scrollIntoView({ block: "nearest" });
    } else {
      el.search.removeAttribute("aria-activedescendant");
    }
  }
  function moveActive(step) {
    if (!state.results.length) return false;
    state.active = (state.active + step + state.results.length) % state.results.length;
    renderResults();
    return true;
  }

  // ---- modes --------------------------------------------------------------------------------
  function setMode(mode) {
    state.mode = mode;
    state.busy = false;
    render();
  }
  function openCash() {
    if (state.mode === "done" || state.busy) return;
    if (state.mode === "cart" && !state.lines.length) { showMessage("The cart is empty. Scan an item first.", "error"); return; }
    closeResults();
    setMode("cash");
    el.tendered.value = "";
    renderQuickAmounts();
    updateChange();
    el.tendered.focus();
  }
  function openMpesa() {
    if (state.mode === "done" || state.busy) return;
    if (state.mode === "cart" && !state.lines.length) { showMessage("The cart is empty. Scan an item first.", "error"); return; }
    closeResults();
    setMode("mpesa");
    if (state.sale && state.sale.customer_phone && !el.phone.value) el.phone.value = state.sale.customer_phone;
    el.phone.focus();
    el.phone.select();
  }
  function openClaim() {
    if (state.mode === "done" || state.busy) return;
    if (state.mode === "cart" && !state.lines.length) { showMessage("The cart is empty. Scan an item first.", "error"); return; }
    closeResults();
    const detail = Object.assign(cart(), {
      sale_id: state.sale ? state.sale.sale_id : null,
      balance_due: state.sale ? state.sale.balance_due : cart().total,
    });
    if (document.dispatchEvent(new CustomEvent("comolor:claim-requested", { detail, cancelable: true }))) {
      showMessage("Till payments are not set up on this till yet. Take cash, or ask a manager.", "error");
      return;
    }
    // The cart is locked while a code is checked: the amount it must match is this total.
    setMode(state.sale ? "pending" : "claim");
  }
  function backToCart() {
    if (state.busy) return;
    setMode(state.sale ? "pending" : "cart");
    el.search.focus();
  }
  function quickAmounts(due) {
    // Exact, then the round sums a customer hands over in Kenyan notes (50 to 1,000).
    const amounts = [due];
    for (const step of [5000, 10000, 20000, 50000, 100000]) {
      const next = Math.ceil(due / step) * step;
      if (next > due && !amounts.includes(next)) amounts.push(next);
    }
    for (let next = Math.ceil((due + 1) / 100000) * 100000; amounts.length < 5; next += 100000) {
      if (!amounts.includes(next)) amounts.push(next);
    }
    return amounts.slice(0, 5);
  }
  function renderQuickAmounts() {
    el.quick.replaceChildren();
    const due = amountDue();
    quickAmounts(due).forEach((cents, index) => {
      el.quick.append(quickButton(index === 0 ? "Exact" : plain(cents).replace(/\.00$/, ""), () => setTendered(cents)));
    });
    for (const note of [50, 100, 200, 500, 1000]) {
      el.quick.append(quickButton("+" + note, () => setTendered((parseCents(el.tendered.value) || 0) + note * 100), "quick-add"));
    }
  }
  function quickButton(label, onClick, extra) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn quick" + (extra ? " " + extra : "");
    button.textContent = label;
    button.addEventListener("click", () => { onClick(); el.tendered.focus(); });
    return button;
  }
  function setTendered(cents) {
    el.tendered.value = decimal(cents).replace(/\.00$/, "");
    updateChange();
  }
  function updateChange() {
    const text = el.tendered.value.trim();
    const due = amountDue();
    const tendered = text === "" ? due : parseCents(text);
    el.changeLine.className = "change-line";
    if (Number.isNaN(tendered)) {
      el.changeLabel.textContent = "Amount";
      el.change.textContent = "not a number";
      el.changeLine.classList.add("short");
    } else if (tendered < due && !state.sale) {
      el.changeLabel.textContent = "Short by";
      el.change.textContent = kes(due - tendered);
      el.changeLine.classList.add("short");
    } else if (tendered < due) {
      el.changeLabel.textContent = "Still to pay after this";
      el.change.textContent = kes(due - tendered);
      el.changeLine.classList.add("partial");
    } else {
      el.changeLabel.textContent = "Change";
      el.change.textContent = kes(tendered - due);
    }
  }
  async function payCash() {
    if (state.busy) return;
    const text = el.tendered.value.trim();
    const due = amountDue();
    const tendered = text === "" ? due : parseCents(text);
    if (Number.isNaN(tendered) || tendered <= 0) { showMessage("Type the cash received in shillings, e.g. 1000.", "error"); return; }
    if (!state.sale && tendered < due) {
      showMessage(`Cash received (${kes(tendered)}) is less than the total (${kes(due)}).`, "error");
      return;
    }
    if (tendered - due > MAX_CHANGE) {
      showMessage(`${kes(tendered)} received for ${kes(due)}? Check the amount typed.`, "error");
      el.tendered.select();
      return;
    }
    setBusy(true);
    let result;
    if (state.sale) {
      result = await fetchJSON(url("saleCash", state.sale.sale_id), { method: "POST", body: { amount_tendered: decimal(tendered) } });
    } else {
      result = await fetchJSON(url("createSale"), {
        method: "POST",
        body: Object.assign(cart(), { payment_method: "cash", amount_tendered: decimal(tendered) }),
      });
    }
    setBusy(false);
    if (!result.ok || !result.data.success) {
      showMessage(result.data.error || "The sale was not saved. Try again.", "error");
      el.tendered.focus();
      return;
    }
    const sale = result.data.sale || result.data;
    if (sale.status === "completed") {
      completed(sale, parseCents(result.data.change_due || "0"), "cash");
    } else {
      showSale(sale);
      showMessage(`${kes(parseCents(result.data.cash_applied))} taken in cash. ${kes(parseCents(sale.balance_due))} still to pay.`, "warning");
    }
  }
  function requestMpesa() {
    if (state.busy) return;
    const phone = el.phone.value.trim();
    if (!phone) { showMessage("Type the customer's M-Pesa phone number, e.g. 0712 345 678.", "error"); return; }
    const detail = Object.assign(cart(), {
      phone, customer_phone: phone, payment_method: "mpesa",
      sale_id: state.sale ? state.sale.sale_id : null,
      balance_due: state.sale ? state.sale.balance_due : cart().total,
    });
    const event = new CustomEvent("comolor:mpesa-requested", { detail, cancelable: true });
    const unclaimed = document.dispatchEvent(event);
    if (unclaimed) showMessage("M-Pesa is not set up on this till yet. Take cash, or ask a manager.", "error");
    // Otherwise the M-Pesa panel shows the prompt's progress itself.
  }
  async function cancelSale() {
    if (!state.sale || state.busy) return;
    if (!window.confirm(`Cancel sale ${state.sale.receipt_number}? The items go back on the shelf.`)) return;
    setBusy(true);
    const result = await fetchJSON(url("saleCancel", state.sale.sale_id), { method: "POST", body: {} });
    setBusy(false);
    if (!result.ok || !result.data.success) { showMessage(result.data.error || "Could not cancel the sale.", "error"); return; }
    const number = result.data.receipt_number;
    resetSale();
    showMessage(result.data.message || `Sale ${number} cancelled.`, result.data.message ? "warning" : "info");
  }
  // A sale paid outside this script (an M-Pesa prompt, a till payment claimed by code) is announced
  // with the server's own figures, like a cash sale: the till, the receipt and the print follow it.
  async function announcePaid(saleId, source) {
    const result = await fetchJSON(url("sale", saleId));
    if (!result.ok) return;
    const sale = result.data;
    const change = (sale.payments || []).reduce((sum, p) => sum + parseCents(p.change_given || "0"), 0);
    const mpesa = (sale.payments || []).filter((p) => p.method === "mpesa").pop();
    document.dispatchEvent(new CustomEvent("comolor:sale-completed", { detail: {
      sale_id: sale.sale_id, receipt_number: sale.receipt_number, total: sale.total, change_due: decimal(change),
      payment_method: "mpesa", receipt_url: sale.receipt_url, sale, mpesa_receipt: mpesa ? mpesa.reference : "", source,
    } }));
  }
  function completed(sale, changeCents, method) {
    enterDone(sale, changeCents);
    state.selected = -1;
    clearMessage();
    el.search.value = "";
    const detail = {
      sale_id: sale.sale_id, receipt_number: sale.receipt_number, total: sale.total,
      change_due: decimal(changeCents), payment_method: method, receipt_url: sale.receipt_url, sale, source: "till",
    };
    document.dispatchEvent(new CustomEvent("comolor:sale-completed", { detail }));
  }
  function onSaleCompleted(event) {
    // Completed elsewhere (the M-Pesa script): show it as the till's own.
    const detail = event.detail || {};
    if (detail.source === "till" || !detail.sale_id) return;
    if (state.mode === "done" && state.sale && state.sale.sale_id === detail.sale_id) return;
    if (detail.sale) { enterDone(detail.sale, parseCents(detail.change_due || "0")); return; }
    fetchJSON(url("sale", detail.sale_id)).then((result) => {
      if (result.ok) enterDone(result.data, parseCents(detail.change_due || "0"));
    });
  }
  function enterDone(sale, changeCents) {
    state.sale = sale;
    state.change = changeCents || 0;
    state.doneAt = Date.now();
    state.lines = [];
    setMode("done");
    el.search.focus();
  }
  function showSale(sale) {
    if (!sale) return;
    if (sale.status === "completed") {
      const change = (sale.payments || []).reduce((sum, p) => sum + parseCents(p.change_given || "0"), 0);
      enterDone(sale, change);
    } else if (sale.status === "cancelled") {
      resetSale();
      showMessage(`Sale ${sale.receipt_number} was cancelled.`, "warning");
    } else {
      state.sale = sale;
      state.lines = [];
      setMode("pending");
      el.search.focus();
    }
  }
  function resetSale(options) {
    clearTimeout(searchTimer);
    state.lines = [];
    state.selected = -1;
    state.sale = null;
    state.change = 0;
    state.busy = false;
    state.mode = "cart";
    state.escArmedUntil = 0;
    if (!(options && options.keepSearch)) el.search.value = "";
    el.tendered.value = "";
    el.phone.value = "";
    closeResults();
    clearMessage();
    render();
    el.search.focus();
  }
  function setBusy(busy) {
    state.busy = busy;
    document.body.classList.toggle("is-busy", busy);
    for (const button of document.querySelectorAll(".till-right button")) {
      if (!button.closest(".till-plugins")) button.disabled = busy;
    }
  }

  // ---- rendering ----------------------------------------------------------------------------
  function render() {
    renderLines();
    renderTotals();
    const mode = state.mode;
    el.cashPanel.hidden = mode !== "cash";
    el.mpesaPanel.hidden = mode !== "mpesa";
    el.pendingPanel.hidden = mode !== "pending";
    el.donePanel.hidden = mode !== "done";
    el.payActions.hidden = !(mode === "cart" || mode === "pending");
    el.payActions.classList.toggle("is-empty", mode === "cart" && !state.lines.length);
    document.body.dataset.tillMode = mode;
  }
  function saleLines() {
    return (state.sale ? state.sale.lines : []).map((line) => ({
      id: line.product_id, name: line.name, quantity: line.quantity,
      price: parseCents(line.unit_price), total: parseCents(line.line_total), locked: true,
    }));
  }
  function renderLines() {
    const lines = state.sale ? saleLines() : state.lines;
    el.lines.replaceChildren();
    el.empty.hidden = lines.length > 0;
    lines.forEach((line, index) => {
      const tr = document.createElement("tr");
      tr.className = "line" + (index === state.selected && !state.sale ? " selected" : "");
      tr.dataset.index = index;
      const name = document.createElement("td");
      name.className = "line-name";
      const title = document.createElement("div");
      title.className = "name";
      title.textContent = line.name;
      const sub = document.createElement("div");
      sub.className = "sub";
      sub.textContent = `${line.sku ? line.sku + " · " : ""}${plain(line.price)} each`;
      name.append(title, sub);

      const qty = document.createElement("td");
      qty.className = "line-qty";
      if (!line.locked && state.mode === "cart") {
        const dec = lineButton("−", "Less", () => setQuantity(index, line.quantity - 1));
        const input = document.createElement("input");
        input.className = "qty-input";
        input.inputMode = "numeric";
        input.value = line.quantity;
        input.setAttribute("aria-label", "Quantity of " + line.name);
        input.addEventListener("focus", () => input.select());
        input.addEventListener("change", () => setQuantity(index, Number(input.value.trim())));
        input.addEventListener("keydown", (event) => {
          if (event.key === "Enter") { event.preventDefault(); input.blur(); el.search.focus(); }
          if (event.key === "Escape") { event.preventDefault(); input.value = line.quantity; el.search.focus(); }
        });
        const inc = lineButton("+", "More", () => setQuantity(index, line.quantity + 1));
        qty.append(dec, input, inc);
      } else {
        qty.textContent = "× " + line.quantity;
      }

      const amount = document.createElement("td");
      amount.className = "num line-total";
      amount.textContent = plain(line.total !== undefined ? line.total : line.price * line.quantity);

      const rm = document.createElement("td");
      rm.className = "rm-col";
      if (!line.locked && state.mode === "cart") rm.append(lineButton("×", "Remove " + line.name, () => removeLine(index), "remove"));
      tr.append(name, qty, amount, rm);
      tr.addEventListener("click", (event) => {
        if (state.sale || event.target.closest("button, input")) return;
        state.selected = index;
        renderLines();
      });
      el.lines.append(tr);
    });
    const selected = el.lines.querySelector(".line.selected");
    if (selected && selected.scrollIntoView) selected.scrollIntoView({ block: "nearest" });
  }
  function lineButton(text, label, onClick, extra) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "line-btn" + (extra ? " " + extra : "");
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.addEventListener("mousedown", (event) => event.preventDefault());
    button.addEventListener("click", (event) => { event.stopPropagation(); onClick(); el.search.focus(); });
    return button;
  }
  function renderTotals() {
    const panel = el.totalPanel;
    const mode = state.mode;
    panel.dataset.state = mode;
    let label = "Total", amount, count, vat, status, figure;
    if (state.sale) {
      const sale = state.sale;
      count = sale.lines.reduce((sum, line) => sum + line.quantity, 0);
      vat = parseCents(sale.vat_total);
      if (mode === "done") {
        const payments = sale.payments || [];
        const codes = payments.filter((p) => p.method === "mpesa").map((p) => p.reference).filter(Boolean);
        const cash = payments.some((p) => p.method === "cash");
        const mpesa = payments.some((p) => p.method === "mpesa");
        // "Change due" only when there is change to hand over; an M-Pesa sale shows its code.
        amount = state.change;
        if (state.change) {
          label = "Change due";
        } else if (mpesa) {
          // A success found by the sweep may not have its M-Pesa code yet.
          label = cash ? "Paid by M-Pesa and cash" : "Paid by M-Pesa";
          figure = codes[codes.length - 1];
        } else {
          label = "No change due";
        }
        status = `Paid · ${sale.receipt_number}`;
        el.doneMeta.textContent = `Sale ${sale.receipt_number} · total ${kes(parseCents(sale.total))} · paid ${kes(parseCents(sale.amount_paid) + state.change)}` +
          (codes.length ? ` · M-Pesa ${codes.join(", ")}` : "");
        el.receiptLink.href = sale.receipt_url || "#";
      } else {
        label = "Balance due";
        amount = parseCents(sale.balance_due);
        status = `Payment due · ${sale.receipt_number}`;
        const paid = parseCents(sale.amount_paid);
        el.pendingNote.textContent = `Sale ${sale.receipt_number}: total ${kes(parseCents(sale.total))}` +
          (paid ? `, ${kes(paid)} paid so far.` : ", nothing paid yet.") +
          " Take cash (F2), send an M-Pesa prompt (F4), check a payment to the till (F6), cancel the sale, or press Esc twice to put it aside.";
      }
    } else {
      const totals = cartTotals();
      amount = totals.total;
      count = totals.count;
      vat = totals.vat;
      status = { cart: `${config.till || "Till"} · ${count ? "sale in progress" : "ready"}`, cash: "Cash payment", mpesa: "M-Pesa payment",
        claim: "Till payment · check the code" }[mode] || "";
    }
    el.totalLabel.textContent = label;
    el.total.textContent = figure || kes(amount);
    el.total.classList.toggle("is-code", Boolean(figure));
    el.count.textContent = count === 1 ? "1 item" : `${count} items`;
    el.vat.textContent = plain(vat);
    el.status.textContent = status;
  }
  function flashLine(index) {
    const row = el.lines.children[index];
    if (!row) return;
    row.classList.remove("flash");
    void row.offsetWidth;  // restart the animation on a repeated scan of the same item
    row.classList.add("flash");
  }

  // ---- keyboard -----------------------------------------------------------------------------
  function onSearchKey(event) {
    const empty = splitQuantity(el.search.value).query === "" && el.search.value === "";
    switch (event.key) {
      case "ArrowDown":
      case "ArrowUp": {
        const step = event.key === "ArrowDown" ? 1 : -1;
        if (!moveActive(step) && state.lines.length && state.mode === "cart") {
          state.selected = Math.max(0, Math.min(state.lines.length - 1, (state.selected < 0 ? state.lines.length : state.selected) + step));
          renderLines();
        }
        event.preventDefault();
        break;
      }
      case "Enter":
        event.preventDefault();
        submitSearch();
        break;
      case "Escape":
        event.preventDefault();
        onEscape();
        break;
      case "+":
      case "-":
        if (empty && state.mode === "cart" && state.lines.length) {
          event.preventDefault();
          const index = state.selected >= 0 ? state.selected : state.lines.length - 1;
          state.selected = index;
          setQuantity(index, state.lines[index].quantity + (event.key === "+" ? 1 : -1));
        }
        break;
      case "Delete":
        if (empty && state.mode === "cart" && state.selected >= 0) {
          event.preventDefault();
          removeLine(state.selected);
        }
        break;
      default:
    }
  }
  function onEscape() {
    if (state.results.length || el.search.value) {
      el.search.value = "";
      closeResults();
      return;
    }
    if (state.mode === "done") { resetSale(); return; }
    if (state.mode === "cash" || state.mode === "mpesa" || state.mode === "claim") { backToCart(); return; }
    if (state.mode === "cart" && state.lines.length) {
      if (Date.now() < state.escArmedUntil) {
        resetSale();
        showMessage("Cart cleared.", "info");
      } else {
        state.escArmedUntil = Date.now() + 3000;
        showMessage("Press Esc again to clear the whole cart.", "warning");
      }
      return;
    }
    if (state.mode === "pending") {
      // The sale stays pending (an M-Pesa payment may still arrive); Today's sales reopens it.
      if (Date.now() < state.escArmedUntil) {
        const number = state.sale.receipt_number;
        resetSale();
        showMessage(`Sale ${number} put aside, still waiting for payment. Reopen it from Today's sales.`, "warning");
      } else {
        state.escArmedUntil = Date.now() + 3000;
        showMessage("Press Esc again to put this unpaid sale aside and start a new one.", "warning");
      }
      return;
    }
    clearMessage();
  }
  function onGlobalKey(event) {
    if (event.key === "F1") { event.preventDefault(); el.search.focus(); return; }
    if (event.key === "F2") { event.preventDefault(); openCash(); return; }
    if (event.key === "F4") { event.preventDefault(); openMpesa(); return; }
    if (event.key === "F6") { event.preventDefault(); openClaim(); return; }
    const target = event.target;
    const typing = target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    if (typing) return;
    if (event.key === "Escape") { event.preventDefault(); onEscape(); return; }
    if (event.key === "Enter" && state.mode === "done" && Date.now() - state.doneAt > 1500
        && !(target && target.closest("a, button"))) {
      event.preventDefault();
      resetSale();
      return;
    }
    // A scanner or a keystroke while focus is elsewhere still lands in the search box.
    if (event.key.length === 1 && !event.ctrlKey && !event.metaKey && !event.altKey && !el.search.disabled) {
      el.search.focus();
    }
  }

  // ---- start --------------------------------------------------------------------------------
  function init() {
    const configNode = document.getElementById("till-config");
    if (!configNode) return;
    config = JSON.parse(configNode.textContent);
    el = {
      search: document.getElementById("till-search"),
      results: document.getElementById("till-results"),
      lines: document.getElementById("till-lines"),
      empty: document.getElementById("till-empty"),
      totalPanel: document.getElementById("till-total-panel"),
      status: document.getElementById("till-status"),
      totalLabel: document.getElementById("till-total-label"),
      total: document.getElementById("till-total"),
      count: document.getElementById("till-count"),
      vat: document.getElementById("till-vat"),
      message: document.getElementById("till-message"),
      payActions: document.getElementById("till-pay-actions"),
      cashPanel: document.getElementById("till-cash-panel"),
      tendered: document.getElementById("till-tendered"),
      quick: document.getElementById("till-quick"),
      changeLine: document.getElementById("till-change-line"),
      changeLabel: document.getElementById("till-change-label"),
      change: document.getElementById("till-change"),
      mpesaPanel: document.getElementById("till-mpesa-panel"),
      phone: document.getElementById("till-phone"),
      pendingPanel: document.getElementById("till-pending-panel"),
      pendingNote: document.getElementById("till-pending-note"),
      donePanel: document.getElementById("till-done-panel"),
      doneMeta: document.getElementById("till-done-meta"),
      receiptLink: document.getElementById("till-receipt-link"),
    };
    el.search.addEventListener("input", onSearchInput);
    el.search.addEventListener("keydown", onSearchKey);
    el.search.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== el.search) closeResults(); }, 150));
    el.tendered.addEventListener("input", updateChange);
    el.tendered.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); payCash(); }
      if (event.key === "Escape") { event.preventDefault(); backToCart(); }
    });
    el.phone.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); requestMpesa(); }
      if (event.key === "Escape") { event.preventDefault(); backToCart(); }
    });
    document.getElementById("till-pay-cash").addEventListener("click", openCash);
    document.getElementById("till-pay-mpesa").addEventListener("click", openMpesa);
    document.getElementById("till-pay-claim").addEventListener("click", openClaim);
    document.getElementById("till-cash-complete").addEventListener("click", payCash);
    document.getElementById("till-mpesa-send").addEventListener("click", requestMpesa);
    document.getElementById("till-cancel-sale").addEventListener("click", cancelSale);
    document.getElementById("till-new-sale").addEventListener("click", () => resetSale());
    for (const button of document.querySelectorAll('.till-right [data-action="back"]')) button.addEventListener("click", backToCart);
    document.addEventListener("keydown", onGlobalKey);
    document.addEventListener("comolor:sale-completed", onSaleCompleted);
    render();
    const saleId = new URLSearchParams(window.location.search).get("sale");
    if (saleId) {
      fetchJSON(url("sale", saleId)).then((result) => {
        if (result.ok) showSale(result.data);
        else showMessage(result.data.error || "That sale could not be opened.", "error");
      });
    }
    el.search.focus();
  }

  window.ComolorTill = {
    cart,
    reset: () => resetSale(),
    back: backToCart,
    announcePaid,
    beep,
    showMessage,
    setText,
    showSale,
    fetchJSON,
    url,
    get sale() { return state.sale; },
    get mode() { return state.mode; },
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
