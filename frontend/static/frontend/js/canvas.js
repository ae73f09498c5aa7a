/* Step 2: the template canvas (points, a box, the live mask overlay: debounced, stale answers dropped,
 * candidates), the reference strip's keyboard navigation, and the model select. */

import { $, $all, csrfToken, loadImage } from "./dom.js";

const OVERLAY_RGB = [47, 111, 237];
const OVERLAY_ALPHA = 0.45;

/* A mask PNG (0/255, image size) -> an overlay canvas of size w x h: tinted inside, outlined at the edge. */
function overlayFromMask(maskImg, w, h) {
  const scratch = document.createElement("canvas");
  scratch.width = w; scratch.height = h;
  const sctx = scratch.getContext("2d", { willReadFrequently: true });
  sctx.imageSmoothingEnabled = true;
  sctx.drawImage(maskImg, 0, 0, w, h);
  const src = sctx.getImageData(0, 0, w, h).data;
  const out = sctx.createImageData(w, h);
  const dst = out.data;
  const inside = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) inside[i] = src[i * 4] > 127 ? 1 : 0;
  let area = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      if (!inside[i]) continue;
      area++;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !inside[i - 1] || !inside[i + 1] || !inside[i - w] || !inside[i + w];
      const o = i * 4;
      if (edge) {
        dst[o] = 255; dst[o + 1] = 255; dst[o + 2] = 255; dst[o + 3] = 230;
      } else {
        dst[o] = OVERLAY_RGB[0]; dst[o + 1] = OVERLAY_RGB[1]; dst[o + 2] = OVERLAY_RGB[2];
        dst[o + 3] = Math.round(OVERLAY_ALPHA * 255);
      }
    }
  }
  sctx.putImageData(out, 0, 0);
  scratch.dataset.area = String(area);
  return scratch;
}

export function initTemplateEditor(root) {
  const canvas = $("#tpl-canvas", root);
  const wrap = $("#canvas-wrap", root);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const pointsInput = $("#tpl-points");
  const countLabel = $("#point-count");
  const saveButton = $("#save-template");
  const errorBox = $("#segment-error");
  const statusLabel = $("#segment-status");
  const candidateButtons = $all("#candidates .candidate");
  const segmentUrl = root.dataset.segmentUrl;
  const initial = $("#initial-points");
  let points = initial ? JSON.parse(initial.textContent) : [];
  // A box prompt, normalised [x0, y0, x1, y1] (Box mode: drag on the canvas), or null.
  const initialBox = $("#initial-box");
  let box = initialBox ? JSON.parse(initialBox.textContent) : null;
  let dragStart = null; // {x, y} normalised, while a box is being dragged
  const boxInput = $("#tpl-box");
  let image = null;
  let candidates = []; // {score, area, maskImg, overlay}
  let selected = 0;
  let seq = 0;        // the last request sent
  let shown = 0;      // the request whose answer is drawn
  let controller = null;
  let timer = null;

  function fit() {
    if (!image) return;
    const maxW = wrap.clientWidth;
    if (!maxW) return;
    const maxH = Math.max(window.innerWidth < 700 ? 240 : 420, Math.min(760, window.innerHeight - 240));
    const scale = Math.min(maxW / image.naturalWidth, maxH / image.naturalHeight, 2);
    const w = Math.max(1, Math.round(image.naturalWidth * scale));
    const h = Math.max(1, Math.round(image.naturalHeight * scale));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w; canvas.height = h;
      candidates.forEach(function (c) { c.overlay = overlayFromMask(c.maskImg, w, h); });
    }
  }

  function drawPoint(p) {
    const x = p.x_norm * canvas.width, y = p.y_norm * canvas.height;
    ctx.beginPath();
    ctx.arc(x, y, 7, 0, Math.PI * 2);
    ctx.fillStyle = p.positive ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
    ctx.beginPath();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#ffffff";
    ctx.moveTo(x - 3.5, y); ctx.lineTo(x + 3.5, y);
    if (p.positive) { ctx.moveTo(x, y - 3.5); ctx.lineTo(x, y + 3.5); }
    ctx.stroke();
  }

  function drawBox(b) {
    const x = b[0] * canvas.width, y = b[1] * canvas.height;
    const w = (b[2] - b[0]) * canvas.width, h = (b[3] - b[1]) * canvas.height;
    ctx.save();
    ctx.lineWidth = 3; ctx.strokeStyle = "#ffffff"; ctx.strokeRect(x, y, w, h);
    ctx.lineWidth = 1.5; ctx.strokeStyle = "#2563eb"; ctx.setLineDash([6, 4]); ctx.strokeRect(x, y, w, h);
    ctx.restore();
  }

  // Keyboard users: arrows move a crosshair, Enter adds a positive point, Shift+Enter or N a negative one.
  const cursor = { x: 0.5, y: 0.5 };
  function drawCursor() {
    const x = cursor.x * canvas.width, y = cursor.y * canvas.height;
    ctx.save();
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(x - 14, y); ctx.lineTo(x - 5, y); ctx.moveTo(x + 5, y); ctx.lineTo(x + 14, y);
    ctx.moveTo(x, y - 14); ctx.lineTo(x, y - 5); ctx.moveTo(x, y + 5); ctx.lineTo(x, y + 14);
    ctx.stroke();
    ctx.strokeStyle = "#111827";
    ctx.lineWidth = 1.2;
    ctx.stroke();
    ctx.restore();
  }

  function draw() {
    if (!image) return;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    const current = points.length || box ? candidates[selected] : null;
    if (current && current.overlay) ctx.drawImage(current.overlay, 0, 0);
    if (box) drawBox(box);
    points.forEach(drawPoint);
    if (canvas.matches(":focus-visible")) drawCursor();
    canvas.dataset.overlaySeq = String(shown);
    canvas.dataset.overlayArea = current ? String(current.area) : "0";
  }

  function drawCandidates() {
    candidateButtons.forEach(function (button, index) {
      const c = candidates[index];
      const thumb = button.querySelector("canvas");
      const tctx = thumb.getContext("2d");
      tctx.clearRect(0, 0, thumb.width, thumb.height);
      const score = button.querySelector(".score");
      button.disabled = !c;
      button.setAttribute("aria-pressed", String(index === selected && !!c));
      if (!c || !image) { score.textContent = "—"; return; }
      const s = Math.min(thumb.width / image.naturalWidth, thumb.height / image.naturalHeight);
      const w = image.naturalWidth * s, h = image.naturalHeight * s;
      const x = (thumb.width - w) / 2, y = (thumb.height - h) / 2;
      tctx.drawImage(image, x, y, w, h);
      tctx.drawImage(c.overlay, x, y, w, h);
      score.textContent = (index === 0 ? "★ " : "") + c.score.toFixed(2);
      button.setAttribute("aria-label", "Candidate " + (index + 1) + ", score " + c.score.toFixed(2) + (index === 0 ? ", best" : ""));
    });
  }

  function updateForm() {
    pointsInput.value = JSON.stringify(points);
    boxInput.value = box ? JSON.stringify(box) : "";
    const pos = points.filter(function (p) { return p.positive; }).length;
    const neg = points.length - pos;
    countLabel.textContent = (points.length
      ? points.length + " point" + (points.length === 1 ? "" : "s") + " (" + pos + " positive, " + neg + " negative)"
      : (box ? "No points" : "No points yet")) + (box ? " + a box" : "");
    saveButton.disabled = pos === 0 && !box; // a template needs a positive point or a box
  }

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  async function segment() {
    const mine = ++seq;
    if (controller) controller.abort();
    if (!points.length && !box) {
      candidates = []; shown = mine; drawCandidates(); draw();
      wrap.classList.remove("is-busy");
      statusLabel.textContent = "";
      return;
    }
    controller = new AbortController();
    const started = performance.now();
    wrap.classList.add("is-busy");
    root.dataset.state = "busy";
    try {
      const response = await fetch(segmentUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(box ? { points: points, box: box } : { points: points }),
        signal: controller.signal,
      });
      const data = await response.json().catch(function () { return {}; });
      if (mine !== seq) return; // a newer request is on its way: drop this answer
      if (!response.ok) {
        showError(data.detail || ("Segmentation failed (" + response.status + ")."));
        return;
      }
      const loaded = await Promise.all(data.candidates.map(function (c) {
        return loadImage("data:image/png;base64," + c.mask).then(function (img) {
          return { score: c.score, area: c.area, maskImg: img, overlay: overlayFromMask(img, canvas.width, canvas.height) };
        });
      }));
      if (mine !== seq) return;
      candidates = loaded;
      selected = 0;
      shown = mine;
      showError("");
      statusLabel.textContent = "mask updated in " + Math.round(performance.now() - started) + " ms";
      drawCandidates();
      draw();
    } catch (error) {
      if (error.name === "AbortError") return;
      if (mine === seq) showError("The server cannot be reached: " + error.message);
    } finally {
      if (mine === seq) {
        wrap.classList.remove("is-busy");
        root.dataset.state = "idle";
      }
    }
  }

  function changed() {
    updateForm();
    draw();
    clearTimeout(timer);
    timer = setTimeout(segment, 120);
  }

  function addPoint(event, positive) {
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) / rect.width;
    const y = (event.clientY - rect.top) / rect.height;
    if (x < 0 || x > 1 || y < 0 || y > 1) return;
    points.push({ x_norm: Math.round(x * 1e5) / 1e5, y_norm: Math.round(y * 1e5) / 1e5, positive: positive });
    changed();
  }

  // Touch has no right click or Shift: the +/- toggle decides what a click or tap adds.
  let mode = "positive";
  $all("[data-point-mode]").forEach(function (button) {
    button.addEventListener("click", function () {
      mode = button.dataset.pointMode;
      $all("[data-point-mode]").forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
      canvas.dataset.mode = mode;
    });
  });
  canvas.addEventListener("click", function (event) {
    if (mode === "box") return; // a drag draws the box
    addPoint(event, mode === "positive" && !event.shiftKey);
  });
  function normalised(event) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)),
      y: Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height)),
    };
  }
  function dragBox(event) {
    const p = normalised(event);
    const r = function (v) { return Math.round(v * 1e5) / 1e5; };
    return [r(Math.min(dragStart.x, p.x)), r(Math.min(dragStart.y, p.y)), r(Math.max(dragStart.x, p.x)), r(Math.max(dragStart.y, p.y))];
  }
  canvas.addEventListener("pointerdown", function (event) {
    if (mode !== "box" || event.button !== 0) return;
    event.preventDefault();
    dragStart = normalised(event);
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!dragStart) return;
    draw();
    drawBox(dragBox(event));
  });
  canvas.addEventListener("pointerup", function (event) {
    if (!dragStart) return;
    const drawn = dragBox(event);
    dragStart = null;
    // A click without a drag (under 1% of a side) keeps the previous box.
    if (drawn[2] - drawn[0] > 0.01 && drawn[3] - drawn[1] > 0.01) box = drawn;
    changed();
  });
  canvas.addEventListener("contextmenu", function (event) { event.preventDefault(); addPoint(event, false); });
  canvas.addEventListener("keydown", function (event) {
    if ((event.key === "z" && (event.ctrlKey || event.metaKey)) || event.key === "Backspace") {
      event.preventDefault(); undo(); return;
    }
    const step = event.shiftKey ? 0.1 : 0.02;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key]) {
      event.preventDefault();
      cursor.x = Math.min(1, Math.max(0, cursor.x + moves[event.key][0]));
      cursor.y = Math.min(1, Math.max(0, cursor.y + moves[event.key][1]));
      draw();
    } else if (event.key === "Enter" || event.key === " " || event.key === "n" || event.key === "N") {
      event.preventDefault();
      const positive = !(event.shiftKey || event.key === "n" || event.key === "N");
      points.push({ x_norm: Math.round(cursor.x * 1e5) / 1e5, y_norm: Math.round(cursor.y * 1e5) / 1e5, positive: positive });
      changed();
    }
  });
  canvas.addEventListener("focus", draw);
  canvas.addEventListener("blur", draw);
  document.addEventListener("keydown", function (event) {
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "z" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); undo(); }
  });
  function undo() {
    if (points.length) { points.pop(); changed(); } else if (box) { box = null; changed(); }
  }
  $("#undo-point").addEventListener("click", undo);
  $("#clear-points").addEventListener("click", function () { points = []; box = null; changed(); });
  candidateButtons.forEach(function (button, index) {
    button.addEventListener("click", function () {
      if (!candidates[index]) return;
      selected = index;
      drawCandidates();
      draw();
    });
  });
  $("#tpl-form").addEventListener("submit", function () {
    saveButton.disabled = true;
    saveButton.textContent = "Saving…";
  });
  // The canvas takes its column's width (and follows it: window resize, phone rotation, layout changes).
  if (window.ResizeObserver) {
    let lastWidth = 0;
    new ResizeObserver(function () {
      // Only the width decides the canvas size; its own height change must not loop back here.
      if (wrap.clientWidth === lastWidth) return;
      lastWidth = wrap.clientWidth;
      requestAnimationFrame(function () { fit(); draw(); drawCandidates(); });
    }).observe(wrap);
  } else {
    window.addEventListener("resize", function () { fit(); draw(); drawCandidates(); });
  }

  updateForm();
  wrap.classList.add("is-busy");
  loadImage(root.dataset.imageUrl).then(function (img) {
    image = img;
    wrap.classList.remove("is-busy");
    fit();
    draw();
    root.dataset.ready = "true";
    if (points.length || box) segment();
  }).catch(function () {
    wrap.classList.remove("is-busy");
    showError("The reference image could not be loaded.");
  });
}

/* The reference strip is one tab stop (roving tabindex): arrow keys, Home and End move, Enter opens. */
export function initRefStrip(strip) {
  const links = $all("a", strip);
  if (!links.length) return;
  const current = links.find(function (a) { return a.getAttribute("aria-current") === "true"; }) || links[0];
  links.forEach(function (a) { a.tabIndex = a === current ? 0 : -1; });
  strip.scrollLeft = Math.max(0, current.offsetLeft - strip.offsetLeft - strip.clientWidth / 2 + current.offsetWidth / 2);
  strip.addEventListener("keydown", function (event) {
    const index = links.indexOf(document.activeElement);
    if (index < 0) return;
    const moves = { ArrowLeft: index - 1, ArrowUp: index - 1, ArrowRight: index + 1, ArrowDown: index + 1, Home: 0, End: links.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const target = links[Math.min(links.length - 1, Math.max(0, moves[event.key]))];
    links.forEach(function (a) { a.tabIndex = a === target ? 0 : -1; });
    target.focus();
    target.scrollIntoView({ block: "nearest", inline: "nearest" });
  });
}

/* The dataset's model select saves on change (its form also has a submit button for no-JS use). */
export function initModelSelect(select) {
  select.addEventListener("change", function () { select.form.requestSubmit(); });
}
