/* Step 3: sliders paired with number inputs (validated as typed), reset, the before/after and outline toggles,
 * the preview image stepper, and the Generate button. */

import { $, $all } from "./dom.js";
import { toast } from "./errors.js";

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

export function initEdits(form) {
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
  /* A mixed dataset: hue and saturation are disabled (with a note) while a grayscale image is previewed; their
     values still go with the autosave, the preview and Generate through a hidden mirror (colour images get them). */
  const grayNote = $("#gray-current-note");
  function syncGray() {
    if (!select || !grayNote) return;
    const option = select.options[select.selectedIndex];
    const gray = !!(option && option.dataset.gray === "true");
    grayNote.hidden = !gray;
    $all(".slider[data-color-only]", form).forEach(function (slider) {
      const number = $("input[type=number]", slider);
      $all("input[type=range], input[type=number]", slider).forEach(function (input) { input.disabled = gray; });
      slider.classList.toggle("disabled", gray);
      let mirror = $("input[type=hidden][data-mirror]", slider);
      if (gray) {
        if (!mirror) {
          mirror = document.createElement("input");
          mirror.type = "hidden";
          mirror.name = number.name;
          mirror.dataset.mirror = "";
          slider.appendChild(mirror);
        }
        mirror.value = number.value;
      } else if (mirror) {
        mirror.remove();
      }
    });
  }
  if (select) {
    select.addEventListener("input", syncGray);
    select.addEventListener("change", syncGray);
  }
  syncGray();
  const prev = $("#preview-prev"), next = $("#preview-next");
  if (prev) prev.addEventListener("click", function () { step(-1); });
  if (next) next.addEventListener("click", function () { step(1); });
  const button = $("#generate-button");
  function updateLabel() {
    const chosen = $("input[name=compose]:checked", form);
    const label = $(".label", button);
    const key = { each: "labelEach", annotate: "labelAnnotate" }[chosen && chosen.value] || "labelStack";
    if (chosen && label) label.textContent = button.dataset[key];
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
