// Drag-and-drop upload: dropped (or chosen) files are posted at once through htmx; each file then shows its own
// import progress, polled from the server. Without JavaScript the form still posts and redirects.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("id_files");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  if (!form || !zone || !input) return;

  function send() {
    if (!input.files || input.files.length === 0) return;
    status.textContent = "Uploading " + input.files.length + " file" + (input.files.length === 1 ? "" : "s") + "…";
    if (window.htmx) { window.htmx.trigger(form, "submit"); } else { form.submit(); }
  }

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "dragend"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("over");
    if (!event.dataTransfer || event.dataTransfer.files.length === 0) return;
    input.files = event.dataTransfer.files;
    send();
  });
  zone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  input.addEventListener("change", send);
  // Files upload as soon as they are chosen, so the button is for choosing when none are: it opens the file chooser
  // rather than the browser's "select one or more files" bubble.
  const button = form.querySelector("button[type=submit]");
  if (button) {
    button.addEventListener("click", function (event) {
      if (!input.files || input.files.length === 0) { event.preventDefault(); input.click(); }
    });
  }

  form.addEventListener("htmx:xhr:progress", function (event) {
    if (!event.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
  });
  form.addEventListener("htmx:afterRequest", function (event) {
    bar.hidden = true;
    bar.value = 0;
    if (event.detail.successful) {
      status.textContent = "Uploaded. Importing below.";
      status.dataset.importing = "true";
      input.value = "";
    } else {
      status.textContent = "The upload failed (" + (event.detail.xhr ? event.detail.xhr.status : "network") + "). Nothing was imported; try again.";
    }
  });
  // Once every file of the upload is through (its list stops polling), the line says so instead of "Importing".
  document.body.addEventListener("htmx:afterSwap", function () {
    if (status.dataset.importing === "true" && !document.querySelector("#upload-results .jobs[hx-trigger]")) {
      status.dataset.importing = "false";
      status.textContent = "Uploaded and imported: each file's result is below.";
    }
  });
  zone.dataset.ready = "true"; // the drop handlers are in place (the script is deferred: the zone exists before them)
})();
