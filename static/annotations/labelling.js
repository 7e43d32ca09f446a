// The labelling screen, keyboard first. The form is plain HTML and works without this script; the script adds the
// key map (j/k, Enter, a, x, digits, o, r, s, b, ?, Ctrl+Enter), keeps a draft in localStorage so a reload (or paging to
// another window of steps) loses nothing, and measures the time spent while the page is visible.
// Further errors (besides the decisive one) are rows of the form, built from a <template> with .value and
// .textContent only, so trace text never becomes markup.
(function () {
  "use strict";
  const root = document.getElementById("labelling");
  const form = document.getElementById("answer-form");
  if (!root || !form) return;

  const stepInput = document.getElementById("id_step_index");
  const agentInput = document.getElementById("id_agent_name");
  const categoryInput = document.getElementById("id_category");
  const reasonInput = document.getElementById("id_reason");
  const leadInput = document.getElementById("id_lead_time_ms");
  const summary = document.getElementById("answer-summary");
  const skipForm = document.getElementById("skip-form");
  const cheatsheet = document.getElementById("cheatsheet");
  const furtherList = document.getElementById("further-errors");
  const furtherTemplate = document.getElementById("further-error-template");
  const steps = Array.from(root.querySelectorAll(".label-steps > li.step"));
  const groups = Array.from(document.querySelectorAll("#categories li.group"));
  const first = parseInt(root.dataset.first, 10);
  const last = parseInt(root.dataset.last, 10);
  const total = parseInt(root.dataset.total, 10);
  const key = "culprit-label-draft:" + root.dataset.draftKey;

  // --- draft -----------------------------------------------------------------------------------------------------
  function loadDraft() {
    try { return JSON.parse(window.localStorage.getItem(key) || "{}") || {}; } catch (e) { return {}; }
  }
  const draft = loadDraft();
  let visibleSince = document.visibilityState === "visible" ? Date.now() : null;
  let spentMs = typeof draft.ms === "number" ? draft.ms : 0;

  function elapsed() {
    return spentMs + (visibleSince === null ? 0 : Date.now() - visibleSince);
  }

  function saveDraft(extra) {
    const data = {step: stepInput.value, agent: agentInput.value, category: categoryInput.value,
                  reason: reasonInput.value, ms: elapsed(), cursor: currentIndex(), further: furtherData()};
    Object.assign(data, extra || {});
    try { window.localStorage.setItem(key, JSON.stringify(data)); } catch (e) { /* storage full or disabled */ }
  }

  // The server re-renders posted values after a refused submit; only fill fields it left empty.
  if (draft.step !== undefined && stepInput.value === "") stepInput.value = draft.step;
  if (draft.agent && !agentInput.value) agentInput.value = draft.agent;
  if (draft.category && !categoryInput.value) categoryInput.value = draft.category;
  if (draft.reason && !reasonInput.value) reasonInput.value = draft.reason;

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      visibleSince = Date.now();
    } else if (visibleSince !== null) {
      spentMs += Date.now() - visibleSince;
      visibleSince = null;
      saveDraft();
    }
  });
  window.addEventListener("pagehide", function () { saveDraft(); });

  // --- the current step ------------------------------------------------------------------------------------------
  let current = 0;
  function currentIndex() {
    return steps.length ? parseInt(steps[current].dataset.index, 10) : null;
  }

  function focusStep(position) {
    if (!steps.length) return;
    steps[current].classList.remove("current");
    current = Math.max(0, Math.min(steps.length - 1, position));
    const li = steps[current];
    li.classList.add("current");
    li.focus({preventScroll: true});
    li.scrollIntoView({block: "nearest"});
  }

  function goToStep(index) {
    saveDraft({cursor: index});
    window.location.search = "?step=" + index;
  }

  function move(delta) {
    const position = current + delta;
    if (position >= steps.length && last + 1 < total) return goToStep(last + 1);
    if (position < 0 && first > 0) return goToStep(first - 1);
    focusStep(position);
  }

  // --- further errors --------------------------------------------------------------------------------------------
  // Digits set the category of the "active" error: the decisive one, or the further error just added.
  let active = null;  // null: the decisive error; else a further error's <li>

  function furtherRows() { return Array.from(furtherList.querySelectorAll("li.further-error")); }

  function furtherData() {
    return furtherRows().map(function (li) {
      return {step: li.querySelector("[name=error_step]").value, agent: li.querySelector("[name=error_agent]").value,
              category: li.querySelector("[name=error_category]").value,
              note: li.querySelector("[name=error_note]").value};
    });
  }

  function addFurther(error) {
    const li = furtherTemplate.content.firstElementChild.cloneNode(true);
    li.dataset.step = error.step;
    li.querySelector(".fe-step").textContent = error.step;
    li.querySelector(".fe-agent").textContent = error.agent || "(the step's agent)";
    li.querySelector("[name=error_step]").value = error.step;
    li.querySelector("[name=error_agent]").value = error.agent || "";
    li.querySelector("[name=error_category]").value = error.category || "";
    li.querySelector("[name=error_note]").value = error.note || "";
    furtherList.appendChild(li);
    return li;
  }

  function setActive(li) {
    active = li;
    furtherRows().forEach(function (row) { row.classList.toggle("active", row === active); });
    showChosen();
  }

  function addCurrent() {
    if (!steps.length) return;
    const li = steps[current];
    setActive(addFurther({step: li.dataset.index, agent: li.dataset.agent}));
    render();
    saveDraft();
  }

  function removeFurther(li) {
    if (!li) return;
    li.remove();
    if (active === li) setActive(null);
    render();
    saveDraft();
  }

  furtherList.addEventListener("click", function (event) {
    const button = event.target.closest(".remove-error");
    if (button) removeFurther(button.closest("li.further-error"));
  });
  furtherList.addEventListener("input", function () { render(); saveDraft(); });
  furtherList.addEventListener("change", function () { render(); saveDraft(); });

  // After a refused submit the server shows the rows it was sent; otherwise the draft's come back.
  if (!furtherRows().length && Array.isArray(draft.further)) draft.further.forEach(addFurther);

  // --- the answer ------------------------------------------------------------------------------------------------
  function categoryLabel(code) {
    const item = document.querySelector("#categories li[data-code='" + code + "']");
    return item ? item.textContent.trim().replace(/^\d+\s*/, "") : code;
  }

  function render() {
    const further = furtherData();
    const furtherSteps = new Set(further.map(function (e) { return e.step; }));
    steps.forEach(function (li) {
      li.classList.toggle("decisive", li.dataset.index === stepInput.value);
      li.classList.toggle("further", furtherSteps.has(li.dataset.index));
    });
    if (stepInput.value === "") return;
    const agent = agentInput.value || agentOfStep(stepInput.value) || "(the step's agent)";
    summary.textContent = "Decisive error: " + agent + " at step " + stepInput.value +
      (categoryInput.value ? " · " + categoryLabel(categoryInput.value) : " · no category") +
      (further.length ? " · " + further.length + " further error" + (further.length === 1 ? "" : "s") : "");
  }

  function agentOfStep(index) {
    const li = steps.find(function (s) { return s.dataset.index === String(index); });
    return li ? li.dataset.agent : "";
  }

  function mark() {
    if (!steps.length) return;
    const li = steps[current];
    stepInput.value = li.dataset.index;
    agentInput.value = li.dataset.agent;
    setActive(null);
    render();
    saveDraft();
  }

  function categoryTarget() {
    return active ? active.querySelector("[name=error_category]") : categoryInput;
  }

  function showChosen() {
    const code = categoryTarget().value;
    document.querySelectorAll("#categories li[data-code]").forEach(function (li) {
      li.classList.toggle("chosen", li.dataset.code === code);
    });
  }

  let pendingGroup = null;
  function digit(n) {
    if (n === 0) {
      pendingGroup = null;
      categoryTarget().value = "";
    } else if (pendingGroup === null) {
      if (n > groups.length) return;
      pendingGroup = n;
    } else {
      const item = groups[pendingGroup - 1].querySelector("li[data-number='" + n + "']");
      if (!item) return;
      categoryTarget().value = item.dataset.code;
      pendingGroup = null;
    }
    groups.forEach(function (g, i) { g.classList.toggle("open", pendingGroup === i + 1); });
    showChosen();
    render();
    if (pendingGroup !== null) {
      // The legend may be scrolled out of sight: bring the group's categories into view and say what comes next.
      const group = groups[pendingGroup - 1];
      group.scrollIntoView({ block: "nearest" });
      summary.textContent = "Category group " + pendingGroup + " (" + group.dataset.name +
        "): now the category's digit; 0 clears.";
    }
    saveDraft();
  }

  function submit() {
    leadInput.value = String(Math.round(elapsed()));
    form.requestSubmit();
  }

  form.addEventListener("submit", function () {
    leadInput.value = String(Math.round(elapsed()));
    try { window.localStorage.removeItem(key); } catch (e) { /* nothing to clean */ }
  });
  // A revision of a submitted answer has no skip (the item is answered) but a way back to the next item.
  if (skipForm) {
    skipForm.addEventListener("submit", function () {
      try { window.localStorage.removeItem(key); } catch (e) { /* nothing to clean */ }
    });
  }
  const previousAnswer = document.getElementById("previous-answer");
  [stepInput, agentInput, categoryInput, reasonInput].forEach(function (input) {
    input.addEventListener("input", function () { render(); saveDraft(); });
    input.addEventListener("change", function () { render(); saveDraft(); });
  });

  function toggleCheatsheet() {
    if (cheatsheet.open) cheatsheet.close(); else cheatsheet.showModal();
  }
  document.getElementById("show-keys").addEventListener("click", toggleCheatsheet);

  // --- the key map -----------------------------------------------------------------------------------------------
  document.addEventListener("keydown", function (event) {
    const target = event.target;
    const typing = target.matches && target.matches("input, textarea, select");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
      return;
    }
    if (typing) {
      if (event.key === "Escape") { event.preventDefault(); target.blur(); focusStep(current); }
      return;
    }
    if (cheatsheet.open || event.altKey || event.ctrlKey || event.metaKey) return;
    const onControl = target.matches && target.matches("button, a, summary");
    if (/^[0-9]$/.test(event.key)) { event.preventDefault(); digit(parseInt(event.key, 10)); return; }
    switch (event.key) {
      case "j": event.preventDefault(); move(1); break;
      case "k": event.preventDefault(); move(-1); break;
      case "Enter":
        if (onControl) return;  // a focused button or link keeps its own Enter
        event.preventDefault(); mark(); break;
      case "o": {
        const details = steps.length ? steps[current].querySelector("details") : null;
        if (details) { event.preventDefault(); details.open = !details.open; }
        break;
      }
      case "a": event.preventDefault(); addCurrent(); break;
      case "x": event.preventDefault(); removeFurther(active); break;
      case "r": event.preventDefault(); reasonInput.focus(); break;
      case "s": if (skipForm) { event.preventDefault(); skipForm.requestSubmit(); } break;
      case "b": if (previousAnswer) { event.preventDefault(); saveDraft(); previousAnswer.click(); } break;
      case "?": event.preventDefault(); toggleCheatsheet(); break;
      case "Escape": pendingGroup = null; groups.forEach(function (g) { g.classList.remove("open"); }); break;
      default: break;
    }
  });

  // Start where the person was: the step asked for in the URL, else the draft's cursor, else the first step here.
  const wanted = root.dataset.target !== "" ? root.dataset.target : draft.cursor;
  const start = steps.findIndex(function (li) { return wanted !== undefined && li.dataset.index === String(wanted); });
  focusStep(start >= 0 ? start : 0);
  showChosen();
  render();
}());
