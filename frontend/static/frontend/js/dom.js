/* The small DOM helpers every widget uses: queries, the CSRF token, image loading. */

export function csrfToken() {
  const headers = document.body.getAttribute("hx-headers");
  if (headers) {
    try { return JSON.parse(headers)["X-CSRFToken"] || ""; } catch (e) { /* fall through */ }
  }
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export function $(selector, root) { return (root || document).querySelector(selector); }
export function $all(selector, root) { return Array.from((root || document).querySelectorAll(selector)); }

export function loadImage(src) {
  return new Promise(function (resolve, reject) {
    const img = new Image();
    img.onload = function () { resolve(img); };
    img.onerror = function () { reject(new Error("image failed to load")); };
    img.src = src;
  });
}
