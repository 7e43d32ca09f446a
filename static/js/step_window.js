// "Show all" on a text longer than the page reads (CULPRIT_STEP_PREVIEW_CHARS: a step's text, an LLM step's raw
// JSON, the run's final answer): fetch the rest of it, one window at a time. The step list and the final answer
// are hx-disable (their text is untrusted), so the button is wired here with htmx.ajax instead of hx-get; the server
// returns the window escaped, with the button for the next one when more follows.
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
