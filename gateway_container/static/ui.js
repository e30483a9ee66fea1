// FLTS status page: the live parts of a page. Each element with data-poll="URL" gets URL's HTML every
// data-interval milliseconds, until the HTML it holds carries a data-final attribute (a decided lineage,
// a drawn plot). The server renders the first state, so a page without scripts still shows everything.
(function () {
  "use strict";
  function interval(element) {
    return Number(element.dataset.interval || 2000);
  }
  function refresh(element) {
    fetch(element.dataset.poll, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status + " " + response.statusText);
        return response.text();
      })
      .then(function (html) {
        element.innerHTML = html;
        element.removeAttribute("data-error");
        schedule(element, interval(element));
      })
      .catch(function (error) {
        element.setAttribute("data-error", String(error));
        schedule(element, interval(element) * 3);
      });
  }
  function schedule(element, delay) {
    if (!element.querySelector("[data-final]")) setTimeout(function () { refresh(element); }, delay);
  }
  // The login page: the key goes into a cookie for this site's pages (a browser sends no API key header).
  function keepKey(event) {
    var form = event.target;
    event.preventDefault();
    document.cookie = form.dataset.cookie + "=" + encodeURIComponent(form.elements.key.value) +
      "; path=/; SameSite=Strict" + (location.protocol === "https:" ? "; Secure" : "");
    location.assign(form.dataset.next);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(function (element) { schedule(element, interval(element)); });
    var login = document.getElementById("login");
    if (login) login.addEventListener("submit", keepKey);
  });
})();
