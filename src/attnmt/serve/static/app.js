// The attention viewer: translate with POST v1/translate and draw each translation's attention matrix
// as a grid, one cell per (target token, source token) pair. Pointing at a target token (its label,
// its row or a cell) highlights the source tokens it attended to; pointing at a source token
// highlights the target tokens that attended to it. No framework, no CDN: plain DOM.
"use strict";

const ATTENDED = 0.2; // a weight at least this large counts as "attended to" (the largest always does)

const form = document.getElementById("translate-form");
const source = document.getElementById("source");
const beam = document.getElementById("beam");
const button = document.getElementById("translate");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const modelInfo = document.getElementById("model-info");

let lastResponse = null; // kept so the subword/word toggle redraws without asking the server again
let maxTexts = 32;
let hasAttention = true; // false for a model with "attention: none"
let deletionTest = false; // whether the server can run the deletion test (a PyTorch model)

function level() {
  return document.querySelector('input[name="level"]:checked').value; // "pieces" | "words"
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadModelInfo() {
  try {
    const response = await fetch("v1/model");
    const info = await response.json();
    modelInfo.textContent =
      `${info.name}: ${info.src_lang} → ${info.trg_lang} · ${info.model.rnn.toUpperCase()} with ` +
      `${info.model.attention === "none" ? "no attention" : `${info.model.attention} attention`} · ` +
      `${info.parameters.toLocaleString()} parameters` +
      (info.attention.startsWith("the mean") ? ` · heatmaps show ${info.attention}` : "");
    hasAttention = info.model.attention !== "none";
    deletionTest = info.deletion_test;
    beam.max = info.limits.max_beam;
    beam.value = Math.min(info.decode.beam_size, info.limits.max_beam);
    maxTexts = info.limits.max_texts;
  } catch (error) {
    modelInfo.textContent = `could not read the model's details: ${error}`;
  }
}

async function translate(event) {
  event.preventDefault();
  const texts = source.value.split("\n").map((line) => line.trim()).filter((line) => line.length > 0);
  if (texts.length === 0) {
    statusLine.textContent = "Type a sentence first.";
    return;
  }
  if (texts.length > maxTexts) {
    statusLine.textContent = `At most ${maxTexts} lines at a time.`;
    return;
  }
  button.disabled = true;
  statusLine.textContent = "Translating…";
  try {
    const response = await fetch("v1/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: texts, beam: Number(beam.value), attention: true, diagnostics: true,
                             deletion_test: deletionTest }),
    });
    const body = await response.json();
    if (!response.ok) {
      statusLine.textContent = `Error ${response.status}: ${body.message || JSON.stringify(body)}`;
      return;
    }
    lastResponse = body;
    render();
    const count = body.results.length;
    statusLine.textContent = `${count} sentence${count === 1 ? "" : "s"} in ${Math.round(body.elapsed_ms)} ms`;
  } catch (error) {
    statusLine.textContent = `The server did not answer: ${error}`;
  } finally {
    button.disabled = false;
  }
}

function render() {
  if (lastResponse === null) return;
  results.replaceChildren(...lastResponse.results.map(renderResult));
}

function renderResult(result, index) {
  const article = element("article", "result");
  article.dataset.index = index;
  const best = result.translations[0];
  article.append(element("p", "source-text", result.source));
  article.append(element("p", "translation", best.text));
  article.append(element("p", "meta", `score ${best.score.toFixed(3)} · log-probability ${best.log_prob.toFixed(3)}`));
  if (best.attention) {
    const matrix = best.attention[level()];
    const readout = element("p", "readout", "Point at a token to see where it looked.");
    const grid = renderHeatmap(matrix, readout);
    const wordOf = level() === "words" ? null : best.attention.source_word_of_piece;
    if (best.diagnostics) markDiagnostics(grid, best.diagnostics, wordOf);
    article.append(grid, legend(best.diagnostics), readout);
    if (best.diagnostics) article.append(diagnosticsLine(best.diagnostics));
  } else if (!hasAttention) {
    article.append(element("p", "readout",
      "This model has no attention (a plain encoder–decoder): there is no matrix to show."));
  }
  return article;
}

function renderHeatmap(matrix, readout) {
  const grid = element("div", "heatmap");
  grid.setAttribute("role", "grid");
  grid.style.setProperty("--columns", matrix.source.length);
  grid.append(element("div", "corner"));
  matrix.source.forEach((label, col) => {
    const cell = element("div", label.length > 2 ? "src-label long" : "src-label", label);
    cell.dataset.col = col;
    cell.tabIndex = 0;
    grid.append(cell);
  });
  matrix.target.forEach((label, row) => {
    const rowLabel = element("div", "trg-label", label);
    rowLabel.dataset.row = row;
    rowLabel.tabIndex = 0;
    grid.append(rowLabel);
    matrix.weights[row].forEach((weight, col) => {
      const cell = element("div", "cell");
      cell.dataset.row = row;
      cell.dataset.col = col;
      cell.dataset.weight = weight;
      cell.style.setProperty("--w", weight);
      cell.title = `${label} → ${matrix.source[col]}: ${weight.toFixed(3)}`;
      grid.append(cell);
    });
  });
  const point = (event) => {
    const target = event.target.closest("[data-row], [data-col]");
    if (!target || !grid.contains(target)) return;
    if (target.dataset.row !== undefined) highlightRow(grid, matrix, Number(target.dataset.row), readout);
    else highlightColumn(grid, matrix, Number(target.dataset.col), readout);
    if (target.classList.contains("cell")) target.classList.add("current");
  };
  grid.addEventListener("mouseover", point);
  grid.addEventListener("focusin", point);
  grid.addEventListener("mouseleave", () => clearHighlight(grid));
  grid.addEventListener("focusout", () => clearHighlight(grid));
  return grid;
}

function legend(diagnostics) {
  const scale = element("p", "legend");
  scale.append(element("span", "", "attention 0"), element("span", "scale"), element("span", "", "1"));
  if (diagnostics) {
    scale.append(element("span", "swatch unattended"),
      element("span", "", `source word attended to less than ${diagnostics.omission_below} in all: possibly untranslated`),
      element("span", "swatch overattended"),
      element("span", "", `more than ${diagnostics.repetition_above}: possibly translated twice`));
    if (diagnostics.deletion_gain !== null) {
      scale.append(element("span", "swatch untranslated"),
        element("span", "", `the word the translation most looks to have left out (deletion test)`));
    }
  }
  return scale;
}

// Mark the source labels of the words the diagnostics flag; wordOf maps a piece column to its word
// (null when the columns are words already).
function markDiagnostics(grid, diagnostics, wordOf) {
  grid.querySelectorAll(".src-label").forEach((label) => {
    const col = Number(label.dataset.col);
    const word = wordOf === null ? col : wordOf[col];
    if (diagnostics.omitted.includes(word)) label.classList.add("unattended");
    if (diagnostics.over_attended.includes(word)) label.classList.add("overattended");
    if (diagnostics.untranslated.includes(word)) label.classList.add("untranslated");
  });
}

function diagnosticsLine(diagnostics) {
  const words = (indices) => indices.map((index) => diagnostics.src_words[index]).join(", ");
  const parts = [];
  if (diagnostics.omitted.length) parts.push(`possibly untranslated: ${words(diagnostics.omitted)}`);
  if (diagnostics.over_attended.length) parts.push(`possibly translated twice: ${words(diagnostics.over_attended)}`);
  if (diagnostics.untranslated.length) parts.push(`left out (deletion test): ${words(diagnostics.untranslated)}`);
  return element("p", "diagnostics", parts.length ? parts.join(" · ") : "every source word was attended to");
}

function clearHighlight(grid) {
  grid.querySelectorAll(".active, .in-focus, .attended, .current").forEach((node) => {
    node.classList.remove("active", "in-focus", "attended", "current");
  });
  grid.querySelectorAll("[style*='--a']").forEach((node) => node.style.removeProperty("--a"));
}

// Mark the labels whose weights are large: the largest always, any other of at least ATTENDED.
function markAttended(labels, weights) {
  const strongest = weights.indexOf(Math.max(...weights));
  const named = [];
  labels.forEach((label, index) => {
    label.style.setProperty("--a", weights[index]);
    if (index === strongest || weights[index] >= ATTENDED) {
      label.classList.add("attended");
      named.push(`${label.textContent} ${weights[index].toFixed(2)}`);
    }
  });
  return named.join(", ");
}

function highlightRow(grid, matrix, row, readout) {
  clearHighlight(grid);
  const label = grid.querySelector(`.trg-label[data-row="${row}"]`);
  label.classList.add("active");
  grid.querySelectorAll(`.cell[data-row="${row}"]`).forEach((cell) => cell.classList.add("in-focus"));
  const named = markAttended([...grid.querySelectorAll(".src-label")], matrix.weights[row]);
  readout.textContent = `“${matrix.target[row]}” attended to: ${named}`;
}

function highlightColumn(grid, matrix, col, readout) {
  clearHighlight(grid);
  const label = grid.querySelector(`.src-label[data-col="${col}"]`);
  label.classList.add("active");
  grid.querySelectorAll(`.cell[data-col="${col}"]`).forEach((cell) => cell.classList.add("in-focus"));
  const column = matrix.weights.map((weights) => weights[col]);
  const named = markAttended([...grid.querySelectorAll(".trg-label")], column);
  readout.textContent = `“${matrix.source[col]}” was attended to by: ${named}`;
}

form.addEventListener("submit", translate);
source.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
document.querySelectorAll('input[name="level"]').forEach((radio) => radio.addEventListener("change", render));
loadModelInfo();
