// "Show all" on a step longer than the page reads (CULPRIT_STEP_PREVIEW_CHARS): fetch the rest of its text, one
// window at a time. The step list is hx-disable (its text is untrusted), so the button is wired here with htmx.ajax
// instead of hx-get; the server returns the window escaped, with the button for the next one when more follows.
if (!window.culpritStepWindow) {
  window.culpritStepWindow = true;
  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-step-window]");
    if (!button || button.disabled) return;
    button.disabled = true;
    htmx.ajax("GET", button.dataset.stepWindow, {target: button, swap: "outerHTML"})
      .finally(function () { button.disabled = false; });
  });
}
