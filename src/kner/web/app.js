// The kner page: POST the text to /predict and show every model's entities side by side.
// User text only ever reaches the page through textContent and DOM nodes, never innerHTML.
"use strict";

const NAMES = { PS: "인물 person", LC: "지명 location", OG: "기관 organisation", DT: "날짜 date", TI: "시간 time", QT: "수량 quantity" };
const COLOURS = { PS: "#ffd6a5", LC: "#caffbf", OG: "#9bf6ff", DT: "#bdb2ff", TI: "#ffc6ff", QT: "#fdffb6" };
const GET_URL_LIMIT = 4000; // longer texts get a blob: link, since servers cap the request line

let modelInfo = [];
let jsonBlobUrl = null;

function colour(label) {
  if (COLOURS[label]) return COLOURS[label];
  let h = 0;
  for (const ch of label) h = (h * 31 + ch.codePointAt(0)) % 360;
  return `hsl(${h}, 80%, 85%)`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// The text as alternating plain runs and <mark> entities; spans are sorted and never overlap.
function highlight(text, spans) {
  const p = el("p", { className: "highlighted" });
  let pos = 0;
  for (const s of spans) {
    // Offsets count Unicode code points (Python str), so slice code points, not UTF-16 units.
    p.append(sliceCodePoints(text, pos, s.start));
    const mark = el("mark", { className: "ent", title: `${s.label} ${NAMES[s.label] || ""}`.trim() },
      el("span", { className: "surface", textContent: s.text }),
      el("span", { className: "lab", textContent: s.label }));
    mark.dataset.label = s.label;
    mark.style.background = colour(s.label);
    p.append(mark);
    pos = s.end;
  }
  p.append(sliceCodePoints(text, pos));
  return p;
}

function sliceCodePoints(text, start, end) {
  return Array.from(text).slice(start, end).join("");
}

function renderLegend(labels) {
  const legend = document.getElementById("legend");
  legend.replaceChildren(...labels.map((label) => {
    const sw = el("span", { className: "swatch", textContent: `${label} ${NAMES[label] || ""}`.trim() });
    sw.dataset.label = label;
    sw.style.background = colour(label);
    return sw;
  }));
}

function renderResults(response) {
  const info = Object.fromEntries(modelInfo.map((m) => [m.name, m]));
  const columns = response.models.map((m) => {
    const about = info[m.model] || {};
    const f1 = about.dev_f1 != null ? `dev F1 ${(about.dev_f1 * 100).toFixed(1)} · ` : "";
    const backend = about.backend === "onnx" ? " (onnxruntime)" : "";
    const section = el("section", { className: "model" },
      el("h2", { textContent: m.model }),
      el("div", { className: "meta" }, `${m.family}${backend} · ${f1}`,
        el("span", { className: "latency", textContent: `${m.latency_ms.toFixed(1)} ms` })),
      ...m.results.map((r) => highlight(r.text, r.spans)));
    section.dataset.model = m.model;
    return section;
  });
  document.getElementById("results").replaceChildren(...columns);
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

function setJsonLink(texts, body) {
  const link = document.getElementById("json-link");
  if (jsonBlobUrl) URL.revokeObjectURL(jsonBlobUrl);
  jsonBlobUrl = null;
  const url = `/predict?text=${encodeURIComponent(texts[0])}`;
  if (texts.length === 1 && url.length <= GET_URL_LIMIT) {
    link.href = url;
  } else {
    jsonBlobUrl = URL.createObjectURL(new Blob([body], { type: "application/json" }));
    link.href = jsonBlobUrl;
  }
  link.hidden = false;
}

async function run(event) {
  if (event) event.preventDefault();
  const texts = document.getElementById("input").value.split(/\r?\n/).filter((t) => t.trim());
  if (!texts.length) {
    showError("Type or paste some Korean text first.");
    return;
  }
  const button = document.getElementById("run");
  button.disabled = true;
  try {
    const res = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts }),
    });
    const body = await res.text();
    if (!res.ok) {
      let detail = body;
      try { detail = JSON.parse(body).detail; } catch (e) { /* not JSON: show the raw body */ }
      showError(`Error ${res.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
      return;
    }
    showError("");
    renderResults(JSON.parse(body));
    setJsonLink(texts, body);
    document.body.dataset.state = "done";
  } catch (err) {
    showError(`Could not reach the server: ${err}`);
  } finally {
    button.disabled = false;
  }
}

async function init() {
  document.getElementById("form").addEventListener("submit", run);
  document.getElementById("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(e);
  });
  try {
    const res = await fetch("/models");
    const data = await res.json();
    modelInfo = data.models;
    const labels = [...new Set(modelInfo.flatMap((m) => m.labels))];
    renderLegend(labels);
    document.getElementById("input").maxLength = data.max_chars * data.max_batch;
  } catch (err) {
    showError(`Could not load the model list: ${err}`);
  }
  document.body.dataset.state = "ready";
}

init();
