// Small UI behaviours, kept out of the HTML so the Content-Security-Policy can forbid inline scripts.
document.addEventListener("click", (event) => {
  // An example question fills the question box too, so it can be edited and asked again.
  const example = event.target.closest("button.example");
  if (example) document.getElementById("question").value = example.textContent.trim();
});
document.addEventListener("htmx:afterRequest", (event) => {
  // "Re-read schema": reload the page once the server has re-read it.
  if (event.detail.elt.hasAttribute("data-reload-after") && event.detail.successful) location.reload();
});
