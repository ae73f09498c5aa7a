/* Server errors people can read: a toast for failed htmx requests (400 fragments carry their own message and
 * are swapped in instead), and the sentence for a failed XMLHttpRequest. */

import { $ } from "./dom.js";

export function toast(message, kind) {
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

export function errorFromResponse(xhr) {
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

/* Once per page: htmx's request failures become toasts. */
export function listenForRequestErrors() {
  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    if (xhr.status === 400) return; // 400 fragments carry their own message and are swapped in
    toast(errorFromResponse(xhr));
  });
  document.addEventListener("htmx:sendError", function () {
    toast("The server cannot be reached. Check your connection and try again.");
  });
}
