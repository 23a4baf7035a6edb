/* The operator page's changes to enrolled products (their photos, their precedence over trained classes), what an
   enrollment's photos will be answered as, and the catalog's history (deployments/catalog/ui.html, served at
   /ui/changes.js, after ui.js, whose helpers it uses). */
"use strict";

/* ---- one product's photos: remove one, add some ---- */
async function photoUrl(sku, id) {
  const photo = await call(`v1/catalog/products/${encodeURIComponent(sku)}/photos/${encodeURIComponent(id)}`);
  const url = URL.createObjectURL(await photo.blob());
  panelUrls.push(url);
  return url;
}
function closePanel() {
  $("product-panel").hidden = true;
  $("product-sku").textContent = "";
}
$("product-close").addEventListener("click", closePanel);
async function openPanel(sku, status) {
  $("product-panel").hidden = false;
  $("product-sku").textContent = sku;
  show($("product-status"), ...(status ? [status] : [busy(`Loading ${sku}'s photos…`)]));
  for (const url of panelUrls) URL.revokeObjectURL(url);
  panelUrls = [];
  let product;
  try {
    product = await json(`v1/catalog/products/${encodeURIComponent(sku)}`);
  } catch (error) {
    show($("product-status"), errorNode(asError(error)));
    return;
  }
  if (!status) show($("product-status"));
  const items = product.photo_ids.map((id, position) => {
    const img = el("img", {class: "thumb", alt: `photo ${position + 1} of ${sku} (id ${id})`});
    photoUrl(sku, id).then((url) => { img.src = url; }, () => { img.alt += ": not loaded"; });
    const remove = el("button", {type: "button", class: "remove-photo", text: "Remove", "data-photo-id": id});
    remove.setAttribute("aria-label", `Remove photo ${position + 1} of ${sku}`);
    remove.disabled = product.photo_ids.length === 1;
    if (remove.disabled) remove.title = "A product's only photo: delete the product instead";
    remove.addEventListener("click", () => removePhoto(sku, id, remove));
    return el("li", {"data-photo-id": id}, img, remove);
  });
  show($("product-photos"), ...items);
  $("product-panel").setAttribute("data-photos", String(items.length));
  const classes = product.precedence || [];
  const rows = classes.map((cls) => {
    const remove = el("button", {type: "button", class: "remove-precedence", text: "Remove", "data-class": cls});
    remove.setAttribute("aria-label", `Remove ${sku}'s precedence over ${className(cls)}`);
    remove.addEventListener("click", () => removePrecedence(sku, cls, remove));
    return el("li", {"data-class": cls}, el("span", {class: "class", text: className(cls), title: cls}), remove);
  });
  show($("product-precedence"), ...(rows.length ? rows : [el("li", {class: "hint", text: "No trained class."})]));
  $("product-panel").setAttribute("data-precedence", String(classes.length));
}
async function removePhoto(sku, id, button) {
  if (!window.confirm(`Remove this photo (id ${id}) from ${sku}?`)) return;
  button.disabled = true;
  show($("product-status"), busy(`Removing photo ${id}…`));
  try {
    const result = await json(`v1/catalog/products/${encodeURIComponent(sku)}/photos/${encodeURIComponent(id)}`,
                              {method: "DELETE"}, true);
    await openPanel(sku, el("div", {class: "ok", text: `Removed photo ${id} of ${sku}; catalog version ${result.catalog_version}.`}));
    changed();
    loadProducts(true);
  } catch (error) {
    show($("product-status"), errorNode(asError(error)));
    button.disabled = false;
  }
}
$("add-photos-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const sku = $("product-sku").textContent;
  const files = [...$("add-photos").files];
  const form = new FormData();
  for (const file of files) form.append("photo", file, file.name);
  $("add-photos-submit").disabled = true;
  show($("product-status"), busy(`Adding ${files.length} photo(s) to ${sku}…`));
  try {
    const result = await upload(`v1/catalog/products/${encodeURIComponent(sku)}/photos`, form, ["add-upload", "add-progress", "add-progress-text"]);
    const summary = el("div", {class: "ok", text: `Added ${result.accepted.length} of ${files.length} photo(s) to ${sku}; `
      + `catalog version ${result.catalog_version}.`});
    $("add-photos-form").reset();
    await openPanel(sku, summary);
    $("product-status").append(photoList(result.accepted, result.rejected), feedbackNode(result));
    changed();
    loadProducts(true);
  } catch (error) {
    const failed = asError(error);
    show($("product-status"), errorNode(failed));
    if (failed.body && Array.isArray(failed.body.rejected)) $("product-status").append(photoList([], failed.body.rejected));
  } finally {
    $("add-photos-submit").disabled = false;
  }
});

/* ---- what the service will answer for the photos just enrolled; the operator's word (precedence) ---- */
function className(cls) {
  // A trained class's label ("Watermelon_ _ ": name, container, size) as words; the label itself in tooltips.
  return cls.split("_").map((part) => part.trim()).filter(Boolean).join(" ") || cls;
}
function feedbackNode(result) {
  // The enrollment's feedback: how many photos will be answered as the product, and why each other one will not,
  // with, where a trained class wins, a button that gives the product precedence over that class.
  const box = el("div", {class: "feedback", role: "group", "aria-label": `What the service will answer for ${result.sku}'s photos`});
  if (!result.feedback) {
    box.append(el("p", {class: "hint feedback-unavailable",
      text: `What the service will answer for these photos is not known: ${result.feedback_unavailable || "no feedback"}.`}));
    return box;
  }
  const names = new Map(result.accepted.map((photo) => [photo.index, photo.filename]));
  const counted = result.answered_as_product || {photos: 0, of: 0};
  if (counted.of) {
    box.append(el("p", {class: "feedback-summary", "data-photos": counted.photos, "data-of": counted.of,
      text: `${counted.photos} of ${counted.of} photos will be answered as this product.`}));
    if (counted.photos === counted.of) box.classList.add("all");
  }
  const status = el("div", {class: "precedence-status", role: "status", "aria-live": "polite"});
  const offered = new Set();
  const items = result.feedback.filter((photo) => photo.answered_as !== "this_product").map((photo) => {
    const item = el("li", {"data-index": photo.position, "data-answered-as": photo.answered_as});
    item.append(`${names.get(photo.position) || "photo " + (photo.position + 1)}: `, el("span", {class: "reason", text: photo.reason}));
    const cls = photo.training_label;
    if (cls && (photo.answered_as === "trained_class" || photo.answered_as === "unknown") && !offered.has(cls)) {
      offered.add(cls);  // one button per class, by the first photo it wins
      item.append(precedenceButton(result.sku, result.label, cls, status));
    }
    return item;
  });
  if (items.length) box.append(el("ul", {class: "feedback-photos"}, ...items));
  box.append(status);
  return box;
}
function precedenceButton(sku, label, cls, status) {
  const button = el("button", {type: "button", class: "give-precedence", "data-class": cls, title: cls,
                               text: `Give ${label} precedence over ${className(cls)} in this store`});
  button.addEventListener("click", () => givePrecedence(sku, label, cls, button, status));
  return button;
}
function setPrecedence(sku, over) {
  return json(`v1/catalog/products/${encodeURIComponent(sku)}/precedence`,
              {method: "PUT", headers: {"Content-Type": "application/json"}, body: JSON.stringify({over})}, true);
}
async function changePrecedence(sku, change) {
  // The product's precedence as the service has it now, changed by `change`, sent back whole (PUT replaces it).
  const product = await json(`v1/catalog/products/${encodeURIComponent(sku)}`);
  return setPrecedence(sku, change(product.precedence || []));
}
async function givePrecedence(sku, label, cls, button, status) {
  if (!window.confirm(`In this store, answer ${label} (${sku}) rather than the trained class ${className(cls)} for a photo `
      + "whose nearest enrolled product is this one? The change is a new catalog version, in the history; it can be removed.")) return;
  button.disabled = true;
  show(status, busy(`Giving ${sku} precedence over ${className(cls)}…`));
  try {
    const result = await changePrecedence(sku, (over) => [...new Set([...over, cls])]);
    show(status, el("div", {class: "ok", text: `${sku} now takes precedence over ${className(cls)} in this store; `
      + `catalog version ${result.catalog_version}.`}));
    button.setAttribute("data-done", "true");
    changed();
    if ($("product-sku").textContent === sku) openPanel(sku);
  } catch (error) {
    show(status, errorNode(asError(error)));
    button.disabled = false;
  }
}
async function removePrecedence(sku, cls, button) {
  if (!window.confirm(`Remove ${sku}'s precedence over ${className(cls)}? The classifier may answer ${className(cls)} again.`)) return;
  button.disabled = true;
  show($("product-status"), busy(`Removing ${sku}'s precedence over ${className(cls)}…`));
  try {
    const result = await changePrecedence(sku, (over) => over.filter((other) => other !== cls));
    await openPanel(sku, el("div", {class: "ok", text: `${sku} no longer takes precedence over ${className(cls)}; `
      + `catalog version ${result.catalog_version}.`}));
    changed();
  } catch (error) {
    show($("product-status"), errorNode(asError(error)));
    button.disabled = false;
  }
}

/* ---- history: the versions, newest first; roll back to one ---- */
async function loadHistory(keepStatus) {
  const page = await readPage(`v1/catalog/history?offset=${historyOffset}&limit=${PAGE_SIZE}`, "history-status", keepStatus);
  if (!page) return;
  const rows = page.versions.map((entry) => {
    const who = entry.address ? `${entry.operator} (${entry.address})` : entry.operator;
    const cells = [el("td", {class: "version", text: String(entry.version)}), el("td", {}, when(entry.time)),
                   el("td", {class: "change", text: entry.change}), el("td", {class: "who", text: who})];
    const action = el("td");
    if (entry.version !== page.total) {  // the newest version is the current catalog already
      const button = el("button", {type: "button", class: "rollback", text: "Roll back to this version", "data-version": entry.version});
      button.setAttribute("aria-label", `Roll back to version ${entry.version}`);
      button.addEventListener("click", () => rollback(entry.version, button));
      action.append(button);
    } else action.append(el("span", {class: "hint", text: "current"}));
    return el("tr", {"data-version": entry.version, "data-action": entry.action}, ...cells, action);
  });
  show($("history-body"), ...rows);
  if (!rows.length) show($("history-body"), el("tr", {}, el("td", {colSpan: 5, class: "hint", text: "No changes yet."})));
  showPager("history", page, page.versions.length, "versions");
}
async function rollback(version, button) {
  if (!window.confirm(`Roll the catalog back to version ${version}? Its products become the current ones, as a new version.`)) return;
  button.disabled = true;
  show($("history-status"), busy(`Rolling back to version ${version}…`));
  try {
    const result = await json("v1/catalog/rollback", {method: "POST", headers: {"Content-Type": "application/json"},
                                                      body: JSON.stringify({version})}, true);
    show($("history-status"), el("div", {class: "ok", text: `Rolled back to version ${version}; catalog version ${result.catalog_version}.`}));
    historyOffset = 0;
    loadInfo();
    loadHistory(true);
    loadProducts();
    if ($("product-sku").textContent) openPanel($("product-sku").textContent);
  } catch (error) {
    show($("history-status"), errorNode(asError(error)));
    button.disabled = false;
  }
}
$("history-prev").addEventListener("click", () => { historyOffset = Math.max(0, historyOffset - PAGE_SIZE); loadHistory(); });
$("history-next").addEventListener("click", () => { historyOffset += PAGE_SIZE; loadHistory(); });

loadInfo();
loadProducts();
loadHistory();
