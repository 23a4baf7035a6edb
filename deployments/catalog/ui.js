/* The operator page's script (deployments/catalog/ui.html, served at /ui/page.js): its helpers, the keys, the
   catalog's info, enrollment, the products' list and trying a photo. ui_changes.js holds the rest. */
"use strict";
const PAGE_SIZE = 20;
const $ = (id) => document.getElementById(id);
let productsOffset = 0, historyOffset = 0;
let thumbUrls = [], panelUrls = [];

/* ---- small DOM helpers: text only, never HTML built from data ---- */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}
function show(target, ...nodes) { target.replaceChildren(...nodes); }
function busy(text) { return el("p", {class: "busy", text}); }
function errorNode(error) {
  // error: {status, code, message}: the service's JSON error, or what went wrong before it answered
  const node = el("div", {class: "error", role: "alert", "data-code": error.code});
  node.append(el("code", {text: error.code}), ": " + error.message);
  if (error.status) node.append(` (HTTP ${error.status})`);
  return node;
}
function fmt(number, digits) { return typeof number === "number" ? number.toFixed(digits) : "–"; }
function when(iso) {
  // the service's ISO 8601 UTC time, shown in this browser's local time (the exact instant in a tooltip)
  if (!iso) return el("span", {text: "never"});
  const date = new Date(iso);
  if (isNaN(date.getTime())) return el("span", {text: String(iso)});
  return el("time", {dateTime: iso, title: iso, text: date.toLocaleString()});
}

/* ---- keys and the operator's name, kept in sessionStorage only ---- */
for (const [id, name] of [["admin-key", "catalog.adminKey"], ["api-key", "catalog.apiKey"], ["operator", "catalog.operator"]]) {
  $(id).value = sessionStorage.getItem(name) || "";
  $(id).addEventListener("input", () => sessionStorage.setItem(name, $(id).value));
}
function headers(admin) {
  const result = {};
  const apiKey = $("api-key").value.trim();
  const adminKey = $("admin-key").value.trim();
  if (apiKey) result["X-API-Key"] = apiKey;
  const operator = $("operator").value.trim();
  if (admin && adminKey) result["X-Admin-Key"] = adminKey;
  if (admin && operator) result["X-Operator"] = operator;
  return result;
}

/* ---- calls: every failure becomes {status, code, message}, with the body's extra fields (rejected photos) ---- */
class CallError extends Error {
  constructor(status, code, message, body) { super(message); Object.assign(this, {status, code, body}); }
}
async function call(path, options, admin) {
  let response;
  try {
    response = await fetch(path, {...options, headers: {...headers(admin), ...(options && options.headers)}});
  } catch (error) {
    throw new CallError(0, "network_error", `the service did not answer (${error.message})`, null);
  }
  if (response.ok) return response;
  throw failure(response.status, await response.text(), response.statusText);
}
function failure(status, text, statusText) {
  let body = null;
  try { body = JSON.parse(text); } catch (ignored) { /* not JSON: a proxy's own answer */ }
  if (body && body.error && typeof body.error.code === "string")
    return new CallError(status, body.error.code, String(body.error.message), body);
  return new CallError(status, "http_" + status, text.trim().slice(0, 300) || statusText, body);
}
function upload(path, form, progress) {
  // An admin POST of a multipart form through XMLHttpRequest, whose upload events fetch lacks: `progress` (a
  // <progress> and its text, in a hidden box) shows the bytes sent, then that the service is at work.
  const [box, bar, text] = progress.map($);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(headers(true))) xhr.setRequestHeader(name, value);
    bar.value = 0;
    text.textContent = "";
    box.hidden = false;
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      bar.value = Math.round(100 * event.loaded / Math.max(1, event.total));
      text.textContent = `${(event.loaded / 1048576).toFixed(1)} of ${(event.total / 1048576).toFixed(1)} MB sent`;
    });
    xhr.upload.addEventListener("load", () => {
      bar.value = 100;
      bar.setAttribute("data-uploaded", "true");
      text.textContent = "Uploaded; the service is reading the photos…";
    });
    xhr.addEventListener("load", () => {
      box.hidden = true;
      if (xhr.status >= 200 && xhr.status < 300) {
        try { resolve(JSON.parse(xhr.responseText)); } catch (error) { reject(failure(xhr.status, xhr.responseText, xhr.statusText)); }
      } else reject(failure(xhr.status, xhr.responseText, xhr.statusText));
    });
    for (const name of ["error", "abort", "timeout"])
      xhr.addEventListener(name, () => { box.hidden = true; reject(new CallError(0, "network_error", `the upload failed (${name})`, null)); });
    xhr.send(form);
  });
}
async function json(path, options, admin) { return (await call(path, options, admin)).json(); }
async function readPage(path, status, keepStatus) {
  // One page of a paged list (products, history), or null with the error shown in `status`.
  if (!keepStatus) show($(status));
  try {
    return await json(path);
  } catch (error) {
    show($(status), errorNode(asError(error)));
    return null;
  }
}
function showPager(prefix, page, shown, nouns) {
  // nouns: "products", "versions": the text says "1–20 of 23 versions", "1–1 of 1 product", "0 versions"
  const last = Math.min(page.offset + shown, page.total);
  const noun = page.total === 1 ? nouns.slice(0, -1) : nouns;
  $(`${prefix}-page`).textContent = page.total ? `${page.offset + 1}–${last} of ${page.total} ${noun}` : `0 ${noun}`;
  $(`${prefix}-prev`).disabled = page.offset === 0;
  $(`${prefix}-next`).disabled = last >= page.total;
}
function asError(error) {
  return error instanceof CallError ? error : {status: 0, code: "page_error", message: String(error && error.message || error)};
}

/* ---- catalog info ---- */
async function loadInfo() {
  show($("catalog-status"));
  try {
    const info = await json("v1/catalog");
    $("catalog-version").textContent = String(info.version);
    $("catalog-products").textContent = String(info.products);
    let photos = String(info.photos);
    if (info.photos_needing_embedding) photos += ` (${info.photos_needing_embedding} waiting to be re-embedded)`;
    $("catalog-photos").textContent = photos;
    $("catalog-model").textContent = String(info.model_version);
    show($("catalog-updated"), when(info.updated));
  } catch (error) {
    show($("catalog-status"), errorNode(asError(error)));
  }
}
$("catalog-refresh").addEventListener("click", () => { loadInfo(); loadProducts(); loadHistory(); });
function changed() { loadInfo(); loadHistory(); }

/* ---- enroll ---- */
function photoList(accepted, rejected) {
  const items = [];
  for (const photo of accepted || [])
    items.push([photo.index, el("li", {class: "accepted", "data-index": photo.index, text: `${photo.filename}: accepted`})]);
  for (const photo of rejected || []) {
    let text = `${photo.filename}: rejected, ${photo.reason}`;
    if (photo.detail) text += ` (${photo.detail})`;
    if (photo.similar_sku) text += `; looks like ${photo.similar_sku} (similarity ${fmt(photo.similarity, 3)})`;
    items.push([photo.index, el("li", {class: "rejected", "data-index": photo.index, "data-reason": photo.reason, text})]);
  }
  items.sort((a, b) => a[0] - b[0]);
  return el("ul", {class: "photos"}, ...items.map((item) => item[1]));
}
$("enroll-form").addEventListener("submit", (event) => { event.preventDefault(); enroll(false); });
async function enroll(replace) {
  const files = [...$("photos").files];
  const sku = $("sku").value.trim();
  const form = new FormData();
  form.append("sku", sku);
  form.append("label", $("label").value.trim());
  if (replace) form.append("replace", "true");
  for (const file of files) form.append("photo", file, file.name);
  $("enroll").disabled = true;
  show($("enroll-result"), busy(`${replace ? "Replacing" : "Enrolling"} from ${files.length} photo(s)…`));
  try {
    const result = await upload("v1/catalog/products", form, ["enroll-upload", "enroll-progress", "enroll-progress-text"]);
    const summary = el("div", {class: "ok"});
    summary.append(`Enrolled ${result.sku} (${result.label}): `,
      el("span", {id: "enroll-accepted", text: String(result.accepted.length)}),
      ` of ${result.accepted.length + result.rejected.length} photos accepted; catalog version `,
      el("span", {id: "enroll-version", text: String(result.catalog_version)}), ".");
    show($("enroll-result"), summary, photoList(result.accepted, result.rejected), feedbackNode(result));
    $("enroll-form").reset();
    changed();
    loadProducts();
  } catch (error) {
    const failed = asError(error);
    const nodes = [errorNode(failed)];
    if (failed.body && Array.isArray(failed.body.rejected)) nodes.push(photoList([], failed.body.rejected));
    if (failed.code === "sku_exists") nodes.push(replaceQuestion(sku));
    show($("enroll-result"), ...nodes);
  } finally {
    $("enroll").disabled = false;
  }
}
function replaceQuestion(sku) {
  // The service never replaces an enrolled product unasked: this asks, and sends the same form with replace=true.
  const box = el("div", {role: "group", "aria-label": `Replace ${sku}?`});
  const yes = el("button", {type: "button", id: "enroll-replace", text: `Replace ${sku}'s label and photos`});
  const no = el("button", {type: "button", id: "enroll-replace-cancel", text: "Cancel"});
  yes.addEventListener("click", () => enroll(true));
  no.addEventListener("click", () => show($("enroll-result"), el("p", {class: "hint", text: `${sku} left as it was.`})));
  box.append(el("p", {text: `${sku} is already enrolled. Replace its label and all its photos with these? `
    + "(The history keeps the old ones: a rollback brings them back.)"}), yes, " ", no);
  return box;
}

/* ---- products ---- */
async function loadThumb(img, sku) {
  try {
    const product = await json(`v1/catalog/products/${encodeURIComponent(sku)}`);
    if (!product.photo_ids || !product.photo_ids.length) { img.alt = `${sku}: no photo`; return; }
    const photo = await call(`v1/catalog/products/${encodeURIComponent(sku)}/photos/${encodeURIComponent(product.photo_ids[0])}`);
    const url = URL.createObjectURL(await photo.blob());
    thumbUrls.push(url);
    img.src = url;
  } catch (error) {
    const failure = asError(error);
    img.alt = `${sku}: photo not loaded`;
    img.title = `${failure.code}: ${failure.message}`;
    img.setAttribute("data-error", failure.code);
  }
}
async function deleteProduct(sku, button) {
  if (!window.confirm(`Delete product ${sku} from the catalog?`)) return;
  button.disabled = true;
  show($("products-status"), busy(`Deleting ${sku}…`));
  try {
    const result = await json(`v1/catalog/products/${encodeURIComponent(sku)}`, {method: "DELETE"}, true);
    show($("products-status"), el("div", {class: "ok", text: `Deleted ${result.sku}; catalog version ${result.catalog_version}.`}));
    if ($("product-sku").textContent === sku) closePanel();
    changed();
    await loadProducts(true);
  } catch (error) {
    show($("products-status"), errorNode(asError(error)));
    button.disabled = false;
  }
}
async function loadProducts(keepStatus) {
  const page = await readPage(`v1/catalog/products?offset=${productsOffset}&limit=${PAGE_SIZE}`, "products-status", keepStatus);
  if (!page) return;
  if (page.products.length === 0 && page.total > 0 && productsOffset > 0) {  // the last one of a page was deleted
    productsOffset = Math.max(0, productsOffset - PAGE_SIZE);
    return loadProducts(keepStatus);
  }
  for (const url of thumbUrls) URL.revokeObjectURL(url);
  thumbUrls = [];
  const rows = page.products.map((product) => {
    const img = el("img", {class: "thumb", alt: `first photo of ${product.sku}`});
    const button = el("button", {type: "button", class: "delete", text: "Delete", "data-sku": product.sku});
    button.setAttribute("aria-label", `Delete ${product.sku}`);
    button.addEventListener("click", () => deleteProduct(product.sku, button));
    const photos = el("button", {type: "button", class: "photos", text: "Photos", "data-sku": product.sku});
    photos.setAttribute("aria-label", `Photos of ${product.sku}: add or remove`);
    photos.addEventListener("click", () => openPanel(product.sku));
    loadThumb(img, product.sku);
    return el("tr", {"data-sku": product.sku},
      el("td", {}, img), el("td", {class: "sku", text: product.sku}), el("td", {class: "label", text: product.label}),
      el("td", {class: "count", text: String(product.photos)}), el("td", {}, when(product.updated)),
      el("td", {}, photos, " ", button));
  });
  show($("products-body"), ...rows);
  if (!rows.length) show($("products-body"), el("tr", {}, el("td", {colSpan: 6, class: "hint", text: "No products enrolled."})));
  showPager("products", page, page.products.length, "products");
}
$("products-prev").addEventListener("click", () => { productsOffset = Math.max(0, productsOffset - PAGE_SIZE); loadProducts(); });
$("products-next").addEventListener("click", () => { productsOffset += PAGE_SIZE; loadProducts(); });

/* ---- try a photo ---- */
function loadImage(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.onload = () => { URL.revokeObjectURL(url); resolve(image); };
    image.onerror = () => { URL.revokeObjectURL(url); reject(new Error("the browser cannot show this photo")); };
    image.src = url;
  });
}
function describe(product) {
  const name = product.label === null ? "unknown" : product.label;
  const parts = [`source: ${product.label_source || "model"}`];
  if (product.sku) parts.push(`sku: ${product.sku}`);
  if (typeof product.similarity === "number") parts.push(`similarity ${fmt(product.similarity, 3)}`);
  parts.push(`confidence ${fmt(product.confidence, 3)}`);
  if (product.label === null && product.candidates && product.candidates.length)
    parts.push(`model's best guess: ${product.candidates[0].label}`);
  if (product.source === "whole_photo") parts.push("nothing detected: the whole photo was classified");
  return {name, detail: parts.join(" · ")};
}
function draw(image, answer) {
  const canvas = $("canvas");
  const width = answer.photo.width, height = answer.photo.height;  // the answer's pixels: upright, full size
  const longest = Math.max(width, height);
  const scale = Math.min(1024, Math.max(640, longest)) / longest;  // small photos enlarged, so the labels fit
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  const line = Math.max(2, Math.round(canvas.width / 300));
  context.font = `${Math.max(12, Math.round(canvas.width / 45))}px system-ui, sans-serif`;
  context.textBaseline = "top";
  answer.products.forEach((product, index) => {
    const box = product.box;
    const x = box.x1 * scale, y = box.y1 * scale, w = (box.x2 - box.x1) * scale, h = (box.y2 - box.y1) * scale;
    const colour = product.label_source === "catalog" ? "#0a7d2c" : (product.label === null ? "#9a6700" : "#1f5fbf");  // the legend's
    context.lineWidth = line;
    context.strokeStyle = colour;
    context.strokeRect(x, y, w, h);
    const {name} = describe(product);
    let text = `${index + 1}. ${name}`;
    if (product.sku) text += ` [${product.sku}]`;
    text += ` ${fmt(product.label_source === "catalog" ? product.similarity : product.confidence, 2)}`;
    const textHeight = parseInt(context.font, 10) + 6;
    const textWidth = context.measureText(text).width + 8;
    const ty = y >= textHeight ? y - textHeight : y;
    const tx = Math.max(0, Math.min(x, canvas.width - textWidth));
    context.fillStyle = colour;
    context.fillRect(tx, ty, textWidth, textHeight);
    context.fillStyle = "#fff";
    context.fillText(text, tx + 4, ty + 3);
  });
  canvas.setAttribute("data-boxes", String(answer.products.length));
}
$("try-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("try-photo").files[0];
  show($("try-result"));
  $("try-json").textContent = "";
  $("canvas").width = $("canvas").height = 0;
  $("canvas").removeAttribute("data-boxes");
  if (!file) { show($("try-status"), errorNode({status: 0, code: "no_photo", message: "choose a photo first"})); return; }
  $("try").disabled = true;
  show($("try-status"), busy("Recognizing…"));
  try {
    const form = new FormData();
    form.append("image", file, file.name);
    const answer = await json("v1/recognize", {method: "POST", body: form});
    $("try-json").textContent = JSON.stringify(answer, null, 2);
    const items = answer.products.map((product, index) => {
      const {name, detail} = describe(product);
      const item = el("li", {class: "product", "data-index": index, "data-label-source": product.label_source || "model",
                             "data-sku": product.sku || ""});
      item.append(el("strong", {class: "name", text: name}), " — ", el("span", {class: "detail", text: detail}));
      return item;
    });
    show($("try-result"), ...items);
    const catalog = answer.models && answer.models.catalog !== undefined && answer.models.catalog !== null
      ? `catalog version ${answer.models.catalog}` : "no catalog";
    show($("try-status"), el("p", {class: "ok", text: `${answer.products.length} product(s); ${catalog}; `
      + `${fmt(answer.timings && answer.timings.total_ms, 0)} ms.`}));
    try {
      draw(await loadImage(file), answer);
    } catch (error) {
      $("try-status").append(errorNode({status: 0, code: "cannot_draw", message: error.message}));
    }
  } catch (error) {
    show($("try-status"), errorNode(asError(error)));
  } finally {
    $("try").disabled = false;
  }
});
