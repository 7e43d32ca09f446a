// Drag-and-drop upload: dropped (or chosen) files and folders are posted at once through htmx; each file then shows
// its own import progress, polled from the server. Without JavaScript the form still posts and redirects.
//
// A folder's trace files go with their path inside it (hidden "paths" fields, one per file: the multipart file name
// keeps only the last part), so "Hand-Crafted/7.json" is imported under the name `import_traces` gives it. More files
// than one request may carry (the server's per-upload limits, on the drop zone) go in parts, one after the other.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("id_files");
  const folderInput = document.getElementById("id_folder");
  const folderButton = document.getElementById("choose-folder");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  if (!form || !zone || !input) return;

  const maxFiles = parseInt(zone.dataset.maxFiles, 10) || 500;
  const maxBytes = parseInt(zone.dataset.maxBytes, 10) || 0;
  // What a folder is searched for, as import_traces searches one: the chooser's extensions, no hidden files.
  const extensions = (input.getAttribute("accept") || "").split(",").map(function (e) { return e.trim().toLowerCase(); })
    .filter(Boolean);
  let parts = [];  // the parts still to send: arrays of {file, path}
  let sent = 0;    // parts sent of this upload
  let total = 0;   // parts of this upload
  let skipped = 0; // files of the dropped folders that are not trace files

  function plural(n, word) { return n.toLocaleString() + " " + word + (n === 1 ? "" : "s"); }
  function leftOut() {
    if (!skipped) return "";
    return skipped === 1 ? " 1 file of the folders is not a trace file and was left out."
      : " " + plural(skipped, "file") + " of the folders are not trace files and were left out.";
  }

  function isTraceFile(path) {
    const names = path.split("/");
    if (names.some(function (n) { return n.startsWith("."); })) return false;
    const name = names[names.length - 1].toLowerCase();
    return extensions.length === 0 || extensions.some(function (e) { return name.endsWith(e); });
  }

  // Every file under the dropped entries: a file dropped by itself always goes (the server says what it is); a
  // folder gives its trace files, found recursively. Entries are read before the first await: a drop's items are
  // readable only while its event is being handled.
  function readEntries(reader) {
    return new Promise(function (resolve, reject) {
      const all = [];
      (function more() {
        reader.readEntries(function (batch) {
          if (batch.length === 0) { resolve(all); return; }
          all.push.apply(all, batch);
          more();
        }, reject);
      })();
    });
  }
  function fileOf(entry) { return new Promise(function (resolve, reject) { entry.file(resolve, reject); }); }
  async function walk(entry, found) {
    if (entry.isDirectory) {
      const children = await readEntries(entry.createReader());
      for (const child of children) await walk(child, found);
      return;
    }
    const path = entry.fullPath.replace(/^\/+/, "");
    if (isTraceFile(path)) found.push({file: await fileOf(entry), path: path}); else skipped += 1;
  }
  async function collect(entries) {
    const found = [];
    for (const entry of entries) {
      if (entry.isDirectory) await walk(entry, found);
      else found.push({file: await fileOf(entry), path: ""});
    }
    return found;
  }

  // Parts of at most maxFiles files and maxBytes bytes (a file bigger than that goes alone: the server refuses it
  // by name); folders' files sorted by path, as import_traces lists a folder.
  function split(items) {
    items.sort(function (a, b) { return (a.path || a.file.name).localeCompare(b.path || b.file.name); });
    const out = [];
    let part = [], bytes = 0;
    for (const item of items) {
      if (part.length && (part.length >= maxFiles || (maxBytes && bytes + item.file.size > maxBytes))) {
        out.push(part); part = []; bytes = 0;
      }
      part.push(item); bytes += item.file.size;
    }
    if (part.length) out.push(part);
    return out;
  }

  function upload(items) {
    if (items.length === 0) {
      status.textContent = skipped
        ? "No trace files in the folder: " + plural(skipped, "other file") + " left out (a folder is searched for "
          + extensions.join(", ") + " files, hidden ones aside)."
        : "Nothing to upload: the folder is empty.";
      return;
    }
    parts = split(items);
    sent = 0;
    total = parts.length;
    next();
  }

  function next() {
    const part = parts.shift();
    if (!part) return;
    sent += 1;
    const transfer = new DataTransfer();
    part.forEach(function (item) { transfer.items.add(item.file); });
    input.files = transfer.files;
    form.querySelectorAll("input[name=paths]").forEach(function (field) { field.remove(); });
    if (part.some(function (item) { return item.path; })) {
      part.forEach(function (item) {
        const field = document.createElement("input");
        field.type = "hidden";
        field.name = "paths";
        field.value = item.path;
        form.appendChild(field);
      });
    }
    status.textContent = "Uploading " + plural(part.length, "file") + (total > 1 ? " (part " + sent + " of " + total + ")" : "") + "…"
      + leftOut();
    if (window.htmx) { window.htmx.trigger(form, "submit"); } else { form.submit(); }
  }

  function send() {
    if (!input.files || input.files.length === 0) return;
    skipped = 0;
    upload(Array.from(input.files).map(function (file) { return {file: file, path: ""}; }));
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
    const transfer = event.dataTransfer;
    if (!transfer) return;
    skipped = 0;
    const entries = Array.from(transfer.items || [])
      .map(function (item) { return item.kind === "file" && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null; })
      .filter(Boolean);
    if (entries.some(function (entry) { return entry.isDirectory; })) {
      status.textContent = "Reading the folder…";
      collect(entries).then(upload, function (error) {
        status.textContent = "The folder could not be read (" + error + "). Nothing was uploaded.";
      });
      return;
    }
    if (transfer.files.length === 0) return;
    upload(Array.from(transfer.files).map(function (file) { return {file: file, path: ""}; }));
  });
  zone.addEventListener("keydown", function (event) {
    if (event.target === folderButton) return;
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  input.addEventListener("change", send);

  // Choosing a folder: where the browser can (webkitdirectory), a second chooser gives a folder's files with their
  // paths inside it.
  if (folderInput && folderButton && "webkitdirectory" in folderInput) {
    folderButton.closest(".folder-choice").hidden = false;
    folderButton.addEventListener("click", function (event) {
      event.preventDefault();  // not the label's own chooser of files
      event.stopPropagation();
      folderInput.click();
    });
    folderInput.addEventListener("change", function () {
      skipped = 0;
      const items = [];
      Array.from(folderInput.files || []).forEach(function (file) {
        const path = file.webkitRelativePath || file.name;
        if (isTraceFile(path)) items.push({file: file, path: path}); else skipped += 1;
      });
      folderInput.value = "";
      upload(items);
    });
  }

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
    input.value = "";
    if (event.detail.successful) {
      status.dataset.importing = "true";
      if (parts.length) { setTimeout(next, 0); return; }  // once htmx has let go of this request
      status.textContent = "Uploaded" + (total > 1 ? " in " + total + " parts" : "") + ". Importing below." + leftOut();
    } else {
      const left = parts.reduce(function (n, part) { return n + part.length; }, 0);
      parts = [];
      const xhr = event.detail.xhr;
      // The server's reason, when it gave one in words (a refused form, a rate limit, a request too big).
      const said = xhr && /^text\/plain/.test(xhr.getResponseHeader("Content-Type") || "")
        ? xhr.responseText.trim().slice(0, 300) : "";
      status.textContent = "The upload" + (total > 1 ? "'s part " + sent + " of " + total : "") + " failed ("
        + (said || (xhr && xhr.status ? "HTTP " + xhr.status : "network")) + "). Nothing of "
        + (total > 1 ? "that part" : "it") + " was imported" + (left ? "; " + plural(left, "more file") + (left === 1 ? " was" : " were") + " not sent" : "")
        + "; try again.";
    }
  });
  // Once every file of the upload is through (its list stops polling), the line says so instead of "Importing".
  document.body.addEventListener("htmx:afterSwap", function () {
    if (status.dataset.importing === "true" && !parts.length && !document.querySelector("#upload-results .jobs[hx-trigger]")) {
      status.dataset.importing = "false";
      status.textContent = "Uploaded and imported: each file's result is below." + leftOut();
    }
  });
  zone.dataset.ready = "true"; // the drop handlers are in place (the script is deferred: the zone exists before them)
})();
