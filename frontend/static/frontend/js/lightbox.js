/* The job page's lightbox: a variant at full size, with its mask outlined on demand. */

import { $, loadImage } from "./dom.js";

const OUTLINE_RGB = [255, 214, 10];


export function initLightbox(dialog) {
  const canvas = $("#lightbox-canvas", dialog);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const title = $("#lightbox-title", dialog);
  const outline = $("#lightbox-outline", dialog);
  const openLink = $("#lightbox-open", dialog);
  let current = null;

  function render() {
    if (!current) return;
    const img = current.img;
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    ctx.drawImage(img, 0, 0);
    if (outline.checked && current.mask) {
      const w = canvas.width, h = canvas.height;
      const scratch = document.createElement("canvas");
      scratch.width = w; scratch.height = h;
      const sctx = scratch.getContext("2d", { willReadFrequently: true });
      sctx.drawImage(current.mask, 0, 0, w, h);
      const m = sctx.getImageData(0, 0, w, h).data;
      const pixels = ctx.getImageData(0, 0, w, h);
      const d = pixels.data;
      const r = Math.max(1, Math.round(Math.max(w, h) / 500));
      const on = function (x, y) { return x >= 0 && y >= 0 && x < w && y < h && m[(y * w + x) * 4] > 127; };
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          if (!on(x, y)) continue;
          if (on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1)) continue;
          for (let dy = -r; dy <= r; dy++) {
            for (let dx = -r; dx <= r; dx++) {
              const xx = x + dx, yy = y + dy;
              if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
              const o = (yy * w + xx) * 4;
              d[o] = OUTLINE_RGB[0]; d[o + 1] = OUTLINE_RGB[1]; d[o + 2] = OUTLINE_RGB[2]; d[o + 3] = 255;
            }
          }
        }
      }
      ctx.putImageData(pixels, 0, 0);
    }
    dialog.dataset.ready = "true";
  }

  document.addEventListener("click", function (event) {
    const trigger = event.target.closest("[data-lightbox]");
    if (!trigger) return;
    dialog.dataset.ready = "false";
    title.textContent = trigger.dataset.title || "";
    openLink.href = trigger.dataset.src;
    const loads = [loadImage(trigger.dataset.src)];
    loads.push(trigger.dataset.mask ? loadImage(trigger.dataset.mask).catch(function () { return null; }) : Promise.resolve(null));
    if (!dialog.open) dialog.showModal();
    Promise.all(loads).then(function (result) {
      current = { img: result[0], mask: result[1] };
      render();
    }).catch(function () { title.textContent = "The image could not be loaded."; });
  });
  outline.addEventListener("change", render);
  $("#lightbox-close", dialog).addEventListener("click", function () { dialog.close(); });
  dialog.addEventListener("click", function (event) { if (event.target === dialog) dialog.close(); });
}
