/* The operator page's changes to enrolled products and the catalog's history (deployments/catalog/ui.html, served
   at /ui/changes.js, after ui.js, whose helpers it uses). */
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
    $("product-status").append(photoList(result.accepted, result.rejected));
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
