/* SAM Dataset Generator: the little JavaScript the pages need, as ES modules (no build step; CSP 'self').
 *
 * One module per widget: upload.js (uploads, the grid filter), canvas.js (the template canvas, the reference
 * strip, the model select), edits.js (sliders and preview), lightbox.js (the job page); errors.js and dom.js
 * are what they share. This module starts them: on the page as loaded, and on what htmx swaps in later
 * (`htmx:load`), each widget root at most once.
 */
import { $ } from "./dom.js";
import { listenForRequestErrors } from "./errors.js";
import { initTemplateEditor, initModelSelect, initRefStrip } from "./canvas.js";
import { initEdits } from "./edits.js";
import { initLightbox } from "./lightbox.js";
import { initFilter, initUploader, keepFilterAcrossSwaps } from "./upload.js";

/* selector of a widget's root -> how to start it on that root */
const WIDGETS = [
  ["#uploader", initUploader],
  [".grid-toolbar .filter", initFilter],
  ["#ref-strip", initRefStrip],
  ["#tpl-editor", function (editor) { if ($("#tpl-canvas", editor)) initTemplateEditor(editor); }],
  ["#dataset-model", initModelSelect],
  ["#generate-form", initEdits],
  ["#lightbox", initLightbox],
];

// htmx fires htmx:load for the whole body once it has processed it, as well as for every swap: a widget
// root already started is skipped, so no listener is ever added twice.
const started = new WeakSet();

function within(root, selector) {
  const found = Array.from(root.querySelectorAll(selector));
  if (root.matches && root.matches(selector)) found.unshift(root);
  return found;
}

function start(root) {
  WIDGETS.forEach(function (widget) {
    within(root, widget[0]).forEach(function (element) {
      if (started.has(element)) return;
      started.add(element);
      widget[1](element);
    });
  });
}

listenForRequestErrors();
keepFilterAcrossSwaps();
document.addEventListener("htmx:load", function (event) {
  if (event.target instanceof Element) start(event.target);
});
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { start(document); });
else start(document);
