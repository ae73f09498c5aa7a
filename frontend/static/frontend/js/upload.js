/* Step 1: uploads with a progress bar (XMLHttpRequest upload progress), drag and drop, ZIP archives; and the
 * image grid's class filter (client side, instant). */

import { $, $all, csrfToken } from "./dom.js";
import { errorFromResponse } from "./errors.js";

export function initUploader(root) {
  const input = $("#file-input", root);
  const zone = $("#dropzone", root);
  const bar = $("#upload-progress", root);
  const text = $("#upload-text", root);
  const report = $("#upload-report", root);
  const url = root.dataset.uploadUrl;
  let busy = false;

  function setProgress(fraction, label) {
    bar.hidden = false;
    bar.classList.toggle("done", fraction >= 1);
    bar.firstElementChild.style.width = Math.round(fraction * 100) + "%";
    bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    text.textContent = label;
  }

  function send(batch, index, count) {
    return new Promise(function (resolve) {
      const form = new FormData();
      batch.images.forEach(function (file) { form.append("images", file, file.name); });
      if (batch.zip) form.append("zip", batch.zip, batch.zip.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      const prefix = count > 1 ? "Batch " + (index + 1) + " of " + count + ": " : "";
      xhr.upload.onprogress = function (event) {
        if (!event.lengthComputable) return;
        const fraction = event.loaded / event.total;
        setProgress(fraction * 0.9, prefix + (fraction < 1
          ? "Uploading " + Math.round(fraction * 100) + "%…"
          : "Processing on the server (decoding, thumbnails)…"));
      };
      xhr.onload = function () {
        if (xhr.status === 200 || xhr.status === 400) {
          htmx.swap(report, xhr.responseText, { swapStyle: "beforeend" });
        } else {
          htmx.swap(report, "", { swapStyle: "beforeend" });
          const p = document.createElement("p");
          p.className = "alert error";
          p.setAttribute("role", "alert");
          p.textContent = errorFromResponse(xhr);
          report.appendChild(p);
        }
        resolve();
      };
      xhr.onerror = function () {
        const p = document.createElement("p");
        p.className = "alert error";
        p.setAttribute("role", "alert");
        p.textContent = "The upload failed: the server cannot be reached.";
        report.appendChild(p);
        resolve();
      };
      xhr.send(form);
    });
  }

  async function upload(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length || busy) return;
    busy = true;
    root.classList.add("is-busy");
    const zips = files.filter(function (f) { return /\.zip$/i.test(f.name); });
    const images = files.filter(function (f) { return !/\.zip$/i.test(f.name); });
    const batches = [{ images: images, zip: zips[0] || null }];
    zips.slice(1).forEach(function (zip) { batches.push({ images: [], zip: zip }); });
    report.innerHTML = "";
    setProgress(0, "Starting the upload of " + files.length + " file" + (files.length === 1 ? "" : "s") + "…");
    for (let i = 0; i < batches.length; i++) {
      await send(batches[i], i, batches.length);
    }
    setProgress(1, "Done: " + files.length + " file" + (files.length === 1 ? "" : "s") + " sent.");
    root.classList.remove("is-busy");
    busy = false;
    applyFilter();
  }

  input.addEventListener("change", function () { upload(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragover"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (event) { upload(event.dataTransfer.files); });
  zone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  // Dropping a file anywhere else must not navigate away from the page.
  window.addEventListener("dragover", function (event) { event.preventDefault(); });
  window.addEventListener("drop", function (event) { event.preventDefault(); });
}

let currentFilter = "";
export function applyFilter() {
  $all("#image-grid .image-tile").forEach(function (tile) {
    tile.hidden = currentFilter !== "" && tile.dataset.class !== currentFilter;
  });
}
export function initFilter(group) {
  group.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-filter]");
    if (!button) return;
    currentFilter = button.dataset.filter;
    $all("button[data-filter]", group).forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
    applyFilter();
  });
}

/* Once per page: the filter holds across htmx swaps of the grid (new tiles are hidden as the filter says). */
export function keepFilterAcrossSwaps() {
  document.addEventListener("htmx:afterSettle", applyFilter);
}
