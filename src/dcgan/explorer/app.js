// dcgan explore: every view posts its inputs to /api/<view> and shows the files the command wrote.
"use strict";

const state = { source: 0, layout: null, slots: { a: [], b: [], c: [], through: [] } };
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(view, body) {
  const response = await fetch(`/api/${view}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ source: state.source, ...body }),
  });
  const answer = await response.json();
  if (!response.ok) {
    showError(answer.error || `request failed (${response.status})`);
    throw new Error(answer.error);
  }
  showError("");
  return answer;
}

function downloads(files) {
  return Object.entries(files)
    .map(([name, url]) => `<a href="${url}" download="${name}">${name}</a>`)
    .join("");
}

function table(values) {
  const rows = Object.entries(values)
    .filter(([, v]) => typeof v === "number" || typeof v === "string")
    .map(([k, v]) => `<tr><th>${k}</th><td>${typeof v === "number" ? +v.toFixed(4) : v}</td></tr>`);
  return `<table>${rows.join("")}</table>`;
}

function renderSlots() {
  for (const [name, numbers] of Object.entries(state.slots)) {
    $(`slot-${name}`).textContent = numbers.length ? numbers.join(", ") : "(empty)";
  }
}

async function loadSources() {
  const { sources } = await (await fetch("/api/sources")).json();
  $("source").innerHTML = sources
    .map((s) => `<option value="${s.index}">${s.path} (step ${s.step})</option>`)
    .join("");
  const describe = () => {
    const s = sources[state.source];
    $("source-info").textContent = `${s.image_size}x${s.image_size}x${s.channels}, nz ${s.nz}` +
      (s.data ? `, trained on ${s.data}` : "");
  };
  $("source").onchange = () => { state.source = +$("source").value; describe(); showSheet(); };
  describe();
}

async function showSheet() {
  const result = await api("sheet", { seed: +$("seed").value, start: +$("start").value, n: +$("n").value });
  state.layout = result.layout;
  const img = $("sheet");
  img.src = `${result.files["samples.png"]}?t=${Date.now()}`;
  img.dataset.start = result.layout.start;
  $("sheet-files").innerHTML = downloads(result.files);
}

function sampleAt(event) {
  // the grid: `columns` tiles per row, each tile plus 2 px of padding, 2 px border
  const img = event.target, layout = state.layout;
  const scale = img.naturalWidth / img.clientWidth;
  const cell = (img.naturalWidth - 2) / layout.columns;
  const col = Math.floor((event.offsetX * scale - 1) / cell);
  const row = Math.floor((event.offsetY * scale - 1) / cell);
  const k = row * layout.columns + col;
  return k >= 0 && k < layout.n && col < layout.columns ? layout.start + k : null;
}

async function runArithmetic() {
  const { a, b, c } = state.slots;
  const result = await api("arithmetic", { seed: state.layout.seed, a, b, c, noise: +$("noise").value });
  const r = result.report;
  $("arithmetic-result").innerHTML =
    `<img src="${result.files["arithmetic.png"]}" alt="arithmetic result">` +
    table({ "|Y|": r.y_norm, "pixel result RMS to G(Y)": r.pixel_result_rms_to_result,
            "mean neighbour RMS to G(Y)": r.neighbour_rms_to_result.reduce((x, y) => x + y, 0) /
              r.neighbour_rms_to_result.length }) +
    `<p class="downloads">${downloads(result.files)}</p>`;
}

async function runWalk() {
  const result = await api("walk", { seed: state.layout.seed, through: state.slots.through,
                                     steps: +$("steps").value, mode: $("mode").value });
  const r = result.report;
  const flagged = r.walks.reduce((n, w) => n + w.flagged.length, 0);
  $("walk-result").innerHTML =
    `<img src="${result.files["walk.png"]}" alt="walk frames">` +
    `<img src="${result.files["walk.gif"]}" alt="walk animation">` +
    table({ frames: r.frames, "sharp jumps flagged": flagged, mode: r.mode }) +
    `<p class="downloads">${downloads(result.files)}</p>`;
}

function wire() {
  $("sheet-form").onsubmit = (e) => { e.preventDefault(); showSheet(); };
  $("next-page").onclick = () => { $("start").value = +$("start").value + +$("n").value; showSheet(); };
  $("prev-page").onclick = () => {
    $("start").value = Math.max(0, +$("start").value - +$("n").value); showSheet();
  };
  $("sheet").onclick = (event) => {
    const number = sampleAt(event);
    if (number === null) return;
    const target = document.querySelector("input[name=target]:checked").value;
    state.slots[target].push(number);
    renderSlots();
  };
  for (const button of document.querySelectorAll("[data-clear]")) {
    button.onclick = () => { state.slots[button.dataset.clear] = []; renderSlots(); };
  }
  $("run-arithmetic").onclick = () => runArithmetic().catch(() => {});
  $("run-walk").onclick = () => runWalk().catch(() => {});
}

wire();
renderSlots();
loadSources().then(showSheet).catch((e) => showError(String(e)));
