// The m3fm viewer: fills the modality and language lists from GET v1/plugins, sends the chosen
// file to POST v1/preview and POST v1/run, and shows the preview, the report and the label
// probabilities. Plain JavaScript, no build step, nothing loaded from outside the server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("run-form");
  const fileInput = $("file");
  const pluginSelect = $("plugin");
  const langSelect = $("lang");
  const labelsInput = $("labels");
  const labelsHint = $("labels-hint");
  const reportBox = $("want-report");
  const diagnosisFrom = $("diagnosis-from");
  const submit = $("submit");
  const statusLine = $("status");
  const errorBox = $("error");
  const oodWarning = $("ood-warning");
  const meta = $("meta");
  const preview = $("preview");
  const previewCaption = $("preview-caption");
  const report = $("report");
  const diagnosis = $("diagnosis");

  // Modality name -> its labels (as far as v1/plugins tells them).
  const labelsOf = new Map();
  // Label id -> its description, shown as the tooltip of its row.
  const descriptions = new Map();
  let previewUrl = null;

  // --- v1/plugins ---------------------------------------------------------------------------

  // GET v1/plugins answers {modalities: [{name, description, labels}], languages: [{code,
  // name}], labels: [{id, description}]}; an option shows "English (en)" for a language.
  function fillSelect(select, options, preferred) {
    select.replaceChildren();
    for (const { value, text, title } of options) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      if (title) option.title = title;
      select.append(option);
    }
    if (!options.length) {
      const option = document.createElement("option");
      option.value = "";
      option.textContent = "none installed";
      select.append(option);
    } else {
      select.value = options.some((o) => o.value === preferred) ? preferred : options[0].value;
    }
  }

  function showLabelsHint() {
    const names = labelsOf.get(pluginSelect.value) || [];
    labelsHint.textContent = names.length
      ? `Empty: every label of the modality (${names.join(", ")}).`
      : "Empty: every label of the modality.";
  }

  async function loadPlugins() {
    try {
      const response = await fetch("v1/plugins", { headers: { Accept: "application/json" } });
      const data = await readJson(response);
      if (!response.ok) throw new Error(errorText(response, data));
      for (const m of data.modalities) labelsOf.set(m.name, m.labels);
      for (const label of data.labels) descriptions.set(label.id, label.description);
      fillSelect(pluginSelect, data.modalities.map(
        (m) => ({ value: m.name, text: m.name, title: m.description })), "ct");
      fillSelect(langSelect, data.languages.map(
        (l) => ({ value: l.code, text: l.name && l.name !== l.code ? `${l.name} (${l.code})`
                                                                  : l.code })), "en");
      showLabelsHint();
    } catch (err) {
      fillSelect(pluginSelect, [], null);
      fillSelect(langSelect, [], null);
      showError(`Could not list the installed plugins: ${err.message}`);
    }
  }

  // --- requests -----------------------------------------------------------------------------

  async function readJson(response) {
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch {
      return { error: text.trim() || response.statusText };
    }
  }

  function errorText(response, data) {
    let message = data && data.error;
    if (!message && data && data.detail) {
      // FastAPI's own validation errors: {"detail": [{"loc": [...], "msg": "..."}]}
      message = Array.isArray(data.detail)
        ? data.detail.map((d) => `${(d.loc || []).slice(-1)[0] || ""}: ${d.msg}`).join("; ")
        : String(data.detail);
    }
    return message || `${response.status} ${response.statusText}`;
  }

  function formFor(withOptions) {
    const body = new FormData();
    body.append("file", fileInput.files[0]);
    body.append("plugin", pluginSelect.value);
    if (withOptions) {
      body.append("lang", langSelect.value);
      const labels = labelsInput.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (labels.length) body.append("labels", labels.join(","));
      body.append("report", reportBox.checked ? "true" : "false");
      body.append("diagnosis_from", diagnosisFrom.value);
    }
    return body;
  }

  async function fetchPreview() {
    const response = await fetch("v1/preview", { method: "POST", body: formFor(false) });
    if (!response.ok) {
      const data = await readJson(response);
      throw new Error(errorText(response, data));
    }
    return response.blob();
  }

  async function fetchRun() {
    const response = await fetch("v1/run", { method: "POST", body: formFor(true) });
    const data = await readJson(response);
    if (!response.ok || (data && data.error)) throw new Error(errorText(response, data));
    return data;
  }

  // --- showing results ----------------------------------------------------------------------

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function setStatus(state, text) {
    statusLine.dataset.state = state;
    statusLine.textContent = text;
  }

  function clearResults() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    oodWarning.hidden = true;
    oodWarning.textContent = "";
    meta.textContent = "";
    report.textContent = "";
    report.classList.remove("empty");
    diagnosis.replaceChildren();
    preview.hidden = true;
    preview.removeAttribute("src");
    previewCaption.textContent = "";
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
  }

  function showPreview(blob) {
    previewUrl = URL.createObjectURL(blob);
    preview.src = previewUrl;
    preview.hidden = false;
    previewCaption.textContent = "As the model sees it (windowed, resized).";
  }

  const percent = (p) => `${(100 * p).toFixed(1)}%`;

  function labelRow(label, probability, promptLang, unvalidated) {
    const row = document.createElement("div");
    row.className = "label-row";
    row.dataset.label = label;
    row.dataset.probability = String(probability);
    if (unvalidated) row.classList.add("unvalidated");

    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label;
    if (descriptions.has(label)) name.title = descriptions.get(label);

    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (100 * probability).toFixed(1));
    bar.setAttribute("aria-label", `${label}: ${percent(probability)}`);
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
    bar.append(fill);

    const value = document.createElement("span");
    value.className = "label-value";
    value.textContent = percent(probability);

    const notes = document.createElement("span");
    notes.className = "label-notes";
    if (promptLang) {
      const lang = document.createElement("span");
      lang.className = "badge prompt-lang";
      lang.dataset.lang = promptLang;
      lang.title = `The label prompt was written in ${promptLang}`;
      lang.textContent = `prompt: ${promptLang}`;
      notes.append(lang);
    }
    if (unvalidated) {
      const badge = document.createElement("span");
      badge.className = "badge unvalidated-badge";
      badge.title = "The model was not validated on this label: read its probability with care";
      badge.textContent = "unvalidated";
      notes.append(badge);
    }
    row.append(name, bar, value, notes);
    return row;
  }

  function showRun(result) {
    const parts = [];
    if (result.input) parts.push(String(result.input).split(/[\\/]/).pop());
    if (result.modality) parts.push(`modality ${result.modality}`);
    if (result.language) parts.push(`report language ${result.language}`);
    meta.textContent = parts.join(" · ");

    if (result.ood) {
      oodWarning.textContent = `This image is unlike the ${result.modality} images the model ` +
        `was trained on (score ${result.ood_score} > ${result.ood_threshold}): the report and ` +
        "probabilities below are not reliable for it.";
      oodWarning.hidden = false;
    }

    if (result.report === null || result.report === undefined) {
      report.textContent = "No report was requested.";
      report.classList.add("empty");
    } else {
      report.textContent = result.report;
      report.lang = result.language || "";
    }

    const probabilities = result.diagnosis || {};
    const languages = result.prompt_languages || {};
    const unvalidated = new Set(result.unvalidated || []);
    const rows = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
    if (!rows.length) {
      const none = document.createElement("p");
      none.className = "hint";
      none.textContent = "No labels were scored.";
      diagnosis.append(none);
    }
    for (const [label, probability] of rows) {
      diagnosis.append(labelRow(label, probability, languages[label], unvalidated.has(label)));
    }
  }

  async function onSubmit(event) {
    event.preventDefault();
    clearResults();
    if (!fileInput.files.length) {
      showError("Choose an image file first.");
      setStatus("error", "");
      fileInput.focus();
      return;
    }
    if (!pluginSelect.value) {
      showError("Choose a modality plugin.");
      setStatus("error", "");
      return;
    }
    submit.disabled = true;
    setStatus("busy", "Working… (the first run loads the model)");
    const [previewResult, runResult] = await Promise.allSettled([fetchPreview(), fetchRun()]);
    const errors = [];
    if (runResult.status === "fulfilled") {
      showRun(runResult.value);
    } else {
      errors.push(runResult.reason.message);
    }
    if (previewResult.status === "fulfilled") {
      showPreview(previewResult.value);
    } else {
      previewCaption.textContent = "No preview.";
      if (runResult.status === "fulfilled") {
        errors.push(`Preview: ${previewResult.reason.message}`);
      }
    }
    if (errors.length) showError(errors.join("\n"));
    setStatus(errors.length ? "error" : "done", errors.length ? "Failed." : "Done.");
    submit.disabled = false;
  }

  // --- drag and drop ------------------------------------------------------------------------

  const dropZone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
  }
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      fileInput.files = event.dataTransfer.files;
    }
  });

  pluginSelect.addEventListener("change", showLabelsHint);
  form.addEventListener("submit", onSubmit);
  loadPlugins();
})();
