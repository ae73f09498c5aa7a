/* SAM Dataset Generator: the little JavaScript the pages need (plain, no build step).
 *
 * - uploads with a progress bar (XMLHttpRequest upload progress), drag and drop, ZIP archives;
 * - the template canvas: points, live mask overlay (debounced, stale answers dropped), candidates;
 * - sliders paired with number inputs, reset, before/after toggle;
 * - the job page's lightbox (full-size variant with its mask outlined);
 * - htmx glue: CSRF for fetch/XHR, server error messages, busy states.
 */
(function () {
  "use strict";

  const OVERLAY_RGB = [47, 111, 237];
  const OVERLAY_ALPHA = 0.45;
  const OUTLINE_RGB = [255, 214, 10];

  function csrfToken() {
    const headers = document.body.getAttribute("hx-headers");
    if (headers) {
      try { return JSON.parse(headers)["X-CSRFToken"] || ""; } catch (e) { /* fall through */ }
    }
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.from((root || document).querySelectorAll(selector)); }

  /* ---------------------------------------------------------------- toasts for server errors */
  function toast(message, kind) {
    let box = $("#toast");
    if (!box) {
      box = document.createElement("div");
      box.id = "toast";
      box.setAttribute("role", "alert");
      document.body.appendChild(box);
    }
    box.className = "toast " + (kind || "error");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(box._timer);
    box._timer = setTimeout(function () { box.hidden = true; }, 6000);
  }

  function errorFromResponse(xhr) {
    const status = xhr.status;
    const type = xhr.getResponseHeader && xhr.getResponseHeader("Content-Type") || "";
    if (type.indexOf("application/json") === 0) {
      try {
        const data = JSON.parse(xhr.responseText);
        if (data.detail) return data.detail;
      } catch (e) { /* ignore */ }
    }
    if (status === 403) return "Not allowed (your session may have expired: reload the page).";
    if (status === 404) return "Not found: it may have been deleted.";
    if (status === 413) return "The upload is too large for the server.";
    if (status === 429) return "Too many requests: wait a moment and try again.";
    if (status >= 500) return "The server failed (" + status + "). Try again.";
    return "The request failed (" + status + ").";
  }

  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    if (xhr.status === 400) return; // 400 fragments carry their own message and are swapped in
    toast(errorFromResponse(xhr));
  });
  document.addEventListener("htmx:sendError", function () {
    toast("The server cannot be reached. Check your connection and try again.");
  });

  /* ---------------------------------------------------------------- step 1: upload */
  function initUploader(root) {
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

  /* image grid class filter (client side, instant) */
  let currentFilter = "";
  function applyFilter() {
    $all("#image-grid .image-tile").forEach(function (tile) {
      tile.hidden = currentFilter !== "" && tile.dataset.class !== currentFilter;
    });
  }
  function initFilter(group) {
    group.addEventListener("click", function (event) {
      const button = event.target.closest("button[data-filter]");
      if (!button) return;
      currentFilter = button.dataset.filter;
      $all("button[data-filter]", group).forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
      applyFilter();
    });
  }
  document.addEventListener("htmx:afterSettle", applyFilter);

  /* ---------------------------------------------------------------- step 2: template canvas */
  function loadImage(src) {
    return new Promise(function (resolve, reject) {
      const img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("image failed to load")); };
      img.src = src;
    });
  }

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

  function initTemplateEditor(root) {
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
  function initRefStrip(strip) {
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

  /* ---------------------------------------------------------------- step 3: sliders and preview */
  function formatNumber(value) { return String(Math.round(value * 1000) / 1000); }

  /* An out-of-range or non-numeric box is refused: marked invalid (red, aria-invalid), the message next to
     it (aria-describedby), the slider left where it was; the server refuses it too (200 + error fragment). */
  function validateNumber(number) {
    const error = document.getElementById(number.id + "-error");
    const raw = number.value.trim();
    const min = Number(number.min), max = Number(number.max);
    let message = "";
    if (number.validity.badInput || (raw !== "" && isNaN(Number(raw)))) message = number.dataset.label + " must be a number.";
    else if (raw === "") message = ""; // blank means neutral
    else if (Number(raw) < min || Number(raw) > max) {
      message = number.dataset.label + " must be between " + formatNumber(min) + " and " + formatNumber(max) + " (you typed " + raw + ").";
    }
    if (error) error.textContent = message;
    number.setAttribute("aria-invalid", String(!!message));
    number.closest(".slider").classList.toggle("invalid", !!message);
    return !message;
  }

  function syncInvalidFromErrors() {
    $all(".slider .field-error").forEach(function (error) {
      const number = document.getElementById(error.id.replace(/-error$/, ""));
      if (!number) return;
      const invalid = error.textContent.trim() !== "";
      number.setAttribute("aria-invalid", String(invalid));
      number.closest(".slider").classList.toggle("invalid", invalid);
    });
  }

  function initEdits(form) {
    $all(".slider .scale[data-neutral-pct]", form).forEach(function (scale) {
      const neutral = $(".neutral", scale);
      const pct = Number(scale.dataset.neutralPct);
      if (neutral && pct > 0 && pct < 100) {
        neutral.style.left = pct + "%";
        neutral.classList.add("placed");
      }
    });
    form.addEventListener("input", function (event) {
      const input = event.target;
      if (!input.matches || !input.matches(".slider input")) return;
      const slider = input.closest(".slider");
      const range = $("input[type=range]", slider);
      const number = $("input[type=number]", slider);
      if (input === range) number.value = range.value;
      if (validateNumber(number) && input === number && number.value !== "") range.value = number.value;
      slider.classList.toggle("changed", Number(number.value || number.dataset.neutral) !== Number(number.dataset.neutral));
    });
    form.addEventListener("change", function (event) {
      if (event.target.matches && event.target.matches(".slider input[type=number]")) validateNumber(event.target);
    });
    document.addEventListener("htmx:afterSettle", syncInvalidFromErrors);
    form.addEventListener("click", function (event) {
      const reset = event.target.closest("[data-reset]");
      if (!reset) return;
      const card = reset.closest(".edit-card");
      $all(".slider", card).forEach(function (slider) {
        $all("input:not([type=hidden])", slider).forEach(function (input) { if (!input.disabled) input.value = input.dataset.neutral; });
        slider.classList.remove("changed");
        const number = $("input[type=number]", slider);
        if (!number.disabled) validateNumber(number);
      });
      const first = $(".slider input[type=number]", card);
      first.dispatchEvent(new Event("input", { bubbles: true }));
      first.dispatchEvent(new Event("change", { bubbles: true }));
    });
    const preview = $("#preview");
    $all("[data-show]").forEach(function (button) {
      button.addEventListener("click", function () {
        preview.classList.toggle("show-before", button.dataset.show === "before");
        $all("[data-show]").forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
      });
    });
    const outline = $("#preview-outline");
    if (outline) outline.addEventListener("change", function () { preview.classList.toggle("show-outline", outline.checked); });
    const select = $("#preview-image");
    function step(delta) {
      if (!select || !select.options.length) return;
      const count = select.options.length;
      select.selectedIndex = (select.selectedIndex + delta + count) % count;
      select.dispatchEvent(new Event("input", { bubbles: true }));
    }
    const prev = $("#preview-prev"), next = $("#preview-next");
    if (prev) prev.addEventListener("click", function () { step(-1); });
    if (next) next.addEventListener("click", function () { step(1); });
    const button = $("#generate-button");
    function updateLabel() {
      const chosen = $("input[name=compose]:checked", form);
      const label = $(".label", button);
      if (chosen && label) label.textContent = button.dataset["label" + (chosen.value === "each" ? "Each" : "Stack")];
    }
    $all("input[name=compose]", form).forEach(function (radio) { radio.addEventListener("change", updateLabel); });
    updateLabel();
    form.addEventListener("submit", function (event) {
      const invalid = $all(".slider input[type=number]", form).filter(function (n) { return !n.disabled && !validateNumber(n); });
      if (invalid.length) {
        event.preventDefault();
        invalid[0].focus();
        toast("Fix the highlighted values first: " + document.getElementById(invalid[0].id + "-error").textContent);
        return;
      }
      button.classList.add("is-busy");
      setTimeout(function () { button.disabled = true; }, 0);
    });
  }

  /* ---------------------------------------------------------------- job page lightbox */
  function initLightbox(dialog) {
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

  /* ---------------------------------------------------------------- boot */
  function boot() {
    const uploader = $("#uploader");
    if (uploader) initUploader(uploader);
    const filter = $(".grid-toolbar .filter");
    if (filter) initFilter(filter);
    const strip = $("#ref-strip");
    if (strip) initRefStrip(strip);
    const editor = $("#tpl-editor");
    if (editor && $("#tpl-canvas", editor)) initTemplateEditor(editor);
    const modelSelect = $("#dataset-model");
    if (modelSelect) modelSelect.addEventListener("change", function () { modelSelect.form.requestSubmit(); });
    const form = $("#generate-form");
    if (form) initEdits(form);
    const lightbox = $("#lightbox");
    if (lightbox) initLightbox(lightbox);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
