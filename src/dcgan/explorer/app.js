// dcgan explore: every view posts its inputs to /api/<view> and shows the files the command wrote.
"use strict";

const state = { source: 0, layout: null, boxes: [], dragging: null, shown: new Set(),
                slots: { a: [], b: [], c: [], through: [], positive: [], negative: [] } };
const $ = (id) => document.getElementById(id);
// the views that take projected latents
const PALETTE_VIEWS = new Set(["sheet", "arithmetic", "direction", "walk", "feature-maps"]);

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(view, body) {
  const response = await fetch(`/api/${view}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ source: state.source, ...body,
                           ...(state.palette && PALETTE_VIEWS.has(view) ? { latents: state.palette } : {}) }),
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

// ---- the page's state in the URL (#seed=3&a=1,4&shown=walk...): a link reproduces the views ------

const KEPT = ["seed", "start", "n", "arith-mode", "noise", "direction-steps", "direction-scale", "steps", "mode",
              "drop", "erase", "curve", "method", "k", "sigmas", "walk-frame", "direction-step", "grid-step"];
const RERUN = { arithmetic: () => runArithmetic(), walk: () => runWalk(), "feature-maps": () => runFeatureMaps(),
                "d-maps": () => runDMaps(), directions: () => runDirections(), forget: () => runForget() };

function saveState() {
  if (state.restoring) return;
  const q = new URLSearchParams({ source: state.source });
  for (const id of KEPT) q.set(id, $(id).value);
  for (const [name, numbers] of Object.entries(state.slots)) if (numbers.length) q.set(name, numbers.join(","));
  if (state.boxes.length) q.set("boxes", state.boxes.map((b) => [b.seed, b.index, ...b.box].join(",")).join(";"));
  if (state.lastClicked !== undefined) q.set("clicked", state.lastClicked);
  if (state.shown.size) q.set("shown", [...state.shown].join(","));
  history.replaceState(null, "", `#${q}`);
}

function restoreState() {
  const q = new URLSearchParams(location.hash.slice(1));
  const numbers = (text) => text.split(",").filter((v) => v !== "").map(Number);
  if (q.has("source")) state.source = +q.get("source");
  for (const id of KEPT) {
    if (!q.has(id)) continue;
    if (["walk-frame", "direction-step", "grid-step"].includes(id)) $(id).max = 1e6;  // set by the result
    $(id).value = q.get(id);
  }
  for (const name of Object.keys(state.slots)) if (q.has(name)) state.slots[name] = numbers(q.get(name));
  state.boxes = (q.get("boxes") || "").split(";").filter(Boolean).map((text) => {
    const [seed, index, ...box] = numbers(text);
    return { seed, index, box };
  });
  if (q.has("clicked")) state.lastClicked = +q.get("clicked");
  return (q.get("shown") || "").split(",").filter((view) => view in RERUN);
}

async function rerun(views) {
  // each view as the link showed it; its sliders keep the positions the link gave
  for (const view of views) {
    try { await RERUN[view](); } catch (e) { /* its message is on the page */ }
  }
}

function renderSlots() {
  for (const [name, numbers] of Object.entries(state.slots)) {
    $(`slot-${name}`).textContent = numbers.length ? numbers.join(", ") : "(empty)";
  }
  if (state.lastClicked !== undefined) $("inside-sample").textContent = sampleName(state.lastClicked);
  saveState();
}

function sampleName(number) {
  return state.palette ? `row ${number} of the projected images` : `sample ${number} of seed ${+$("seed").value}`;
}

async function loadSources() {
  const { sources } = await (await fetch("/api/sources")).json();
  $("source").innerHTML = sources
    .map((s) => `<option value="${s.index}">${s.path} (step ${s.step})</option>`)
    .join("");
  $("source").value = state.source;
  const describe = () => {
    const s = sources[state.source];
    state.imageSize = s.image_size;
    $("source-info").textContent = `${s.image_size}x${s.image_size}x${s.channels}, nz ${s.nz}` +
      (s.data ? `, trained on ${s.data}` : "");
  };
  $("source").onchange = () => {
    state.source = +$("source").value;
    describe();
    showSheet();
    showTraining();
  };
  describe();
}

async function showSheet() {
  const result = await api("sheet", { seed: +$("seed").value, start: +$("start").value, n: +$("n").value });
  state.layout = result.layout;
  const img = $("sheet");
  img.src = `${result.files["samples.png"]}?t=${Date.now()}`;
  img.dataset.start = result.layout.start;
  $("sheet-files").innerHTML = downloads(result.files);
  saveState();
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

function tileAt(x, y) {
  // natural-pixel (x, y) -> { k, within: [px, py] } on the grid (2 px padding around every tile)
  const layout = state.layout, img = $("sheet");
  const cell = (img.naturalWidth - 2) / layout.columns, size = cell - 2;
  const col = Math.floor((x - 2) / cell), row = Math.floor((y - 2) / cell);
  const k = row * layout.columns + col;
  if (col < 0 || col >= layout.columns || k < 0 || k >= layout.n) return null;
  return { k, size, x0: 2 + col * cell, y0: 2 + row * cell };
}

function natural(event) {
  const img = $("sheet"), rect = img.getBoundingClientRect();
  return [(event.clientX - rect.left) * img.naturalWidth / rect.width,
          (event.clientY - rect.top) * img.naturalHeight / rect.height];
}

function drawBoxes() {
  const img = $("sheet"), canvas = $("boxes-layer");
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const ctx = canvas.getContext("2d"), scale = img.clientWidth / img.naturalWidth;
  ctx.strokeStyle = "#ff0";
  ctx.lineWidth = 2;
  const imageSize = state.imageSize;
  for (const b of state.boxes) {
    if (b.seed !== state.layout.seed || b.index < state.layout.start ||
        b.index >= state.layout.start + state.layout.n) continue;
    const k = b.index - state.layout.start, col = k % state.layout.columns;
    const row = Math.floor(k / state.layout.columns);
    const cell = (img.naturalWidth - 2) / state.layout.columns, px = (cell - 2) / imageSize;
    const [x0, y0, x1, y1] = b.box;
    ctx.strokeRect((2 + col * cell + x0 * px) * scale, (2 + row * cell + y0 * px) * scale,
                   (x1 - x0) * px * scale, (y1 - y0) * px * scale);
  }
  if (state.dragging && state.dragging.end) {
    const [a, c] = [state.dragging.start, state.dragging.end];
    ctx.strokeStyle = "#0ff";
    ctx.strokeRect(a[0] * scale, a[1] * scale, (c[0] - a[0]) * scale, (c[1] - a[1]) * scale);
  }
}

function renderBoxes() {
  $("box-list").innerHTML = state.boxes.map((b, i) =>
    `<li>sample ${b.index} (seed ${b.seed}): [${b.box.join(", ")}] ` +
    `<button type="button" data-remove-box="${i}">remove</button></li>`).join("");
  for (const button of document.querySelectorAll("[data-remove-box]")) {
    button.onclick = () => { state.boxes.splice(+button.dataset.removeBox, 1); renderBoxes(); };
  }
  if (state.layout) drawBoxes();
  saveState();
}

function finishBox() {
  const { start, end } = state.dragging;
  state.dragging = null;
  const tile = tileAt(...start);
  if (!tile || !end) { drawBoxes(); return; }
  // the rectangle inside that tile, in G's image pixels (x1, y1 exclusive)
  const toImage = (v, origin) => Math.min(state.imageSize,
    Math.max(0, Math.round((v - origin) * state.imageSize / tile.size)));
  const xs = [start[0], end[0]].sort((a, b) => a - b), ys = [start[1], end[1]].sort((a, b) => a - b);
  const box = [toImage(xs[0], tile.x0), toImage(ys[0], tile.y0), toImage(xs[1], tile.x0), toImage(ys[1], tile.y0)];
  if (box[2] <= box[0] || box[3] <= box[1]) { drawBoxes(); return; }
  state.boxes.push({ seed: state.layout.seed, index: state.layout.start + tile.k, box });
  renderBoxes();
}

function boxesFile() {
  // the boxes file format `dcgan forget --boxes` reads: one entry per sample
  const entries = new Map();
  for (const b of state.boxes) {
    const key = `${b.seed}:${b.index}`;
    if (!entries.has(key)) entries.set(key, { seed: b.seed, index: b.index, boxes: [] });
    entries.get(key).boxes.push(b.box);
  }
  return { boxes: [...entries.values()] };
}

async function runForget() {
  $("forget-result").textContent = "fitting the detector...";
  let result;
  try {
    result = await api("forget", { boxes: boxesFile(), drop: $("drop").value, seed: state.layout.seed,
                                   erase: $("erase").value, curve: $("curve").value });
  } catch (e) {
    $("forget-result").textContent = "";
    return;
  }
  const r = result.report;
  $("forget-result").innerHTML =
    `<img src="${result.files["forget.png"]}" alt="samples with and without the dropped maps">` +
    table({ "maps dropped": `${r.dropped} of ${r.maps_in_layer}`, "detector accuracy": r.detector_accuracy,
            "mean change inside the boxes": r.mean_abs_change_in_boxes,
            "mean change outside": r.mean_abs_change_outside, erase: r.erase }) +
    (r.curve ? curveTable(r.curve) + `<img src="${result.files["forget_curve.png"]}" alt="effect curve">` : "") +
    `<p class="downloads">${downloads(result.files)}</p>`;
  shown("forget");
}

function curveTable(curve) {
  // the effect curve: pixel change inside / outside the boxes with the k strongest maps vs k random ones
  const cell = (v) => `<td>${v.toFixed(4)}</td>`;
  return `<table class="curve"><tr><th>maps dropped</th><th>inside, strongest</th><th>inside, random</th>` +
    `<th>outside, strongest</th><th>outside, random</th></tr>` +
    curve.map((p) => `<tr><td>${p.k}</td>${cell(p.top.inside)}${cell(p.random.inside)}` +
      `${cell(p.top.outside)}${cell(p.random.outside)}</tr>`).join("") + "</table>";
}

function shown(view) {
  state.shown.add(view);
  saveState();
}

// ---- frames cut out of walk_frames.png / direction_frames.png: 2 px of padding around every tile ----

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

function drawFrame(canvas, strip, t) {
  // column t of every row of the strip, rows stacked, upscaled (nearest) to about 128 px
  const size = state.imageSize, zoom = Math.max(1, Math.round(128 / size));
  const rows = Math.round((strip.naturalHeight - 2) / (size + 2));
  canvas.width = size * zoom;
  canvas.height = rows * (size + 2) * zoom - 2 * zoom;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  for (let r = 0; r < rows; r++) {
    ctx.drawImage(strip, 2 + t * (size + 2), 2 + r * (size + 2), size, size,
                  0, r * (size + 2) * zoom, size * zoom, size * zoom);
  }
}

function setSlider(slider, last) {
  // a new result: keep the slider where the link (or the user) put it, if that frame exists
  slider.max = last;
  if (+slider.value > last) slider.value = 0;
}

async function runArithmetic() {
  if ($("arith-mode").value === "direction") return runDirection();
  $("direction-player").hidden = true;
  const { a, b, c } = state.slots;
  const result = await api("arithmetic", { seed: state.layout.seed, a, b, c, noise: +$("noise").value });
  const r = result.report;
  $("arithmetic-result").innerHTML =
    `<img src="${result.files["arithmetic.png"]}" alt="arithmetic result">` +
    table({ "|Y|": r.y_norm, "pixel result RMS to G(Y)": r.pixel_result_rms_to_result,
            "mean neighbour RMS to G(Y)": r.neighbour_rms_to_result.reduce((x, y) => x + y, 0) /
              r.neighbour_rms_to_result.length }) +
    `<p class="downloads">${downloads(result.files)}</p>`;
  shown("arithmetic");
}

async function runDirection() {
  // `dcgan arithmetic --to A --from B --targets C`: C + alpha (mean z(A) - mean z(B)), alpha in steps
  const { a, b, c } = state.slots;
  if (!a.length || !b.length) {
    showError("direction mode needs A (samples with the attribute) and B (without): click samples into both");
    return;
  }
  const body = { seed: state.layout.seed, to: a, from: b, steps: +$("direction-steps").value,
                 scale: +$("direction-scale").value, ...(c.length ? { targets: c } : {}) };
  const result = await api("direction", body);
  const r = result.report;
  state.direction = { report: r, strip: await loadImage(result.files["direction_frames.png"]) };
  $("arithmetic-result").innerHTML =
    `<img src="${result.files["direction.png"]}" alt="the direction added to each target in steps">` +
    table({ "|v| = |mean z(A) - mean z(B)|": r.v_norm, steps: r.alphas.length,
            "last step": `${r.alphas[r.alphas.length - 1]} v`, targets: String(r.targets) }) +
    `<p class="downloads">${downloads(result.files)}</p>`;
  setSlider($("direction-step"), r.alphas.length - 1);
  $("direction-player").hidden = false;
  showDirectionStep();
  shown("arithmetic");
}

function showDirectionStep() {
  if (!state.direction) return;
  const t = +$("direction-step").value, r = state.direction.report, alpha = r.alphas[t];
  drawFrame($("direction-frame"), state.direction.strip, t);
  $("direction-step-value").textContent = `step ${t} of ${r.alphas.length - 1}: C + ${alpha.toFixed(3)} v ` +
    `(|${alpha.toFixed(3)} v| = ${(Math.abs(alpha) * r.v_norm).toFixed(3)}), ` +
    `mean RMS change ${r.mean_rms_change[t].toFixed(4)}`;
  saveState();
}

async function runWalk() {
  stopWalk();
  const result = await api("walk", { seed: state.layout.seed, through: state.slots.through,
                                     steps: +$("steps").value, mode: $("mode").value });
  const r = result.report;
  const flagged = r.walks.reduce((n, w) => n + w.flagged.length, 0);
  state.walk = { report: r, strip: await loadImage(result.files["walk_frames.png"]) };
  $("walk-result").innerHTML =
    `<img src="${result.files["walk.png"]}" alt="walk frames">` +
    `<img src="${result.files["walk.gif"]}" alt="walk animation">` +
    table({ frames: r.frames, "sharp jumps flagged": flagged, mode: r.mode }) +
    `<p class="downloads">${downloads(result.files)}</p>`;
  setSlider($("walk-frame"), r.frames - 1);
  $("walk-player").hidden = false;
  showWalkFrame();
  shown("walk");
}

function showWalkFrame() {
  if (!state.walk) return;
  const t = +$("walk-frame").value, r = state.walk.report, w = r.walks[0];
  drawFrame($("walk-canvas"), state.walk.strip, t);
  const jump = t > 0 && w.flagged.includes(t - 1);
  $("walk-frame-value").textContent = `frame ${t} of ${r.frames - 1}` + (t === 0 ? "" :
    `: ${w.pixel[t - 1].toFixed(4)} from frame ${t - 1} (median ${w.pixel_median.toFixed(4)})` +
    (jump ? ", a sharp jump" : ""));
  drawJumps(w, t);
  if (!state.playing) saveState();
}

function drawJumps(w, t) {
  // one bar per step s -> s + 1 (its pixel distance); red: flagged in walk.json; blue: the step into frame t
  const svg = $("walk-jumps"), width = +svg.getAttribute("width"), height = +svg.getAttribute("height");
  const top = Math.max(...w.pixel, 1e-12), bar = width / w.pixel.length;
  svg.innerHTML = w.pixel.map((d, s) => {
    const h = Math.max(1, (height - 2) * d / top), jump = w.flagged.includes(s);
    const colour = jump ? "#c00" : s === t - 1 ? "#36c" : "#999";
    return `<rect class="${jump ? "jump" : "step"}" x="${(s * bar).toFixed(1)}" y="${(height - h).toFixed(1)}" ` +
      `width="${Math.max(1, bar - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="${colour}">` +
      `<title>frame ${s} to ${s + 1}: ${d.toFixed(4)}</title></rect>`;
  }).join("");
}

function playWalk() {
  if (state.playing) { stopWalk(); return; }
  $("walk-play").textContent = "pause";
  state.playing = setInterval(() => {
    const slider = $("walk-frame");
    slider.value = (+slider.value + 1) % (+slider.max + 1);
    showWalkFrame();
  }, 1000 / 12);  // walk.gif's frame rate
}

function stopWalk() {
  clearInterval(state.playing);
  state.playing = null;
  $("walk-play").textContent = "play";
  saveState();
}

async function runFeatureMaps() {
  if (state.lastClicked === undefined) {
    showError("click a sample on the sheet first");
    return;
  }
  const result = await api("feature-maps", { net: "g", seed: state.layout.seed, index: state.lastClicked });
  shown("feature-maps");
  const layers = result.report.layers.map((l) => ({ layer: l.name, shape: l.shape.join("x"),
    mean: +l.mean.toFixed(4), "inactive fraction": +l.inactive_fraction.toFixed(4) }));
  $("feature-maps-result").innerHTML =
    `<img src="${result.files["feature_maps_g.png"]}" alt="feature maps">` +
    `<table><tr>${Object.keys(layers[0]).map((k) => `<th>${k}</th>`).join("")}</tr>` +
    layers.map((l) => `<tr>${Object.values(l).map((v) => `<td>${v}</td>`).join("")}</tr>`).join("") +
    `</table><p class="downloads">${downloads(result.files)}</p>`;
}

async function runDirections() {
  const method = $("method").value;
  const result = await api("directions", { method, k: +$("k").value, seed: state.layout.seed,
                                           positive: state.slots.positive, negative: state.slots.negative });
  const files = Object.keys(result.files).filter((f) => /^direction_\d+\.json$/.test(f));
  $("direction").innerHTML = files.map((f) => `<option value="${result.files[f]}">${f}</option>`).join("");
  const r = result.report;
  const summary = { method: r.method, "seconds": r.seconds };
  if (r.heldout_accuracy !== undefined) summary["held-out accuracy"] = r.heldout_accuracy;
  $("directions-result").innerHTML =
    `<img src="${result.files["directions.png"]}" alt="every direction on sample 0">` + table(summary) +
    `<p class="downloads">${downloads(result.files)}</p>`;
  $("move").hidden = false;
  shown("directions");
  await moveSample();
}

async function moveSample() {
  const amount = +$("sigmas").value;
  $("sigmas-value").textContent = `${amount >= 0 ? "+" : ""}${amount.toFixed(1)} sigma`;
  const result = await api("move", { seed: state.layout.seed, index: state.lastClicked ?? 0,
                                     direction: $("direction").value, sigmas: amount });
  $("moved").src = result.files["moved.png"];
  saveState();
}

async function upload(view, query, file) {
  // an image file as the request's body, the settings in the query
  const response = await fetch(`/api/${view}?source=${state.source}&${query}`, { method: "POST", body: file });
  const result = await response.json();
  if (!response.ok) {
    showError(result.error || `request failed (${response.status})`);
    throw new Error(result.error);
  }
  showError("");
  return result;
}

async function runProject() {
  const file = $("upload").files[0];
  if (!file) {
    showError("choose an image file first");
    return;
  }
  $("project-result").textContent = "projecting...";
  let result;
  try {
    result = await upload("project", `steps=${+$("project-steps").value}&restarts=${+$("restarts").value}`, file);
  } catch (e) {
    $("project-result").textContent = "";
    return;
  }
  const r = result.report;
  state.projected = result.files["latents.json"];
  $("project-result").innerHTML =
    `<img src="${result.files["projection.png"]}" alt="the image beside its reconstruction">` +
    table(Object.fromEntries(Object.entries(r).filter(([k, v]) => typeof v === "number"))) +
    `<p class="downloads">${downloads(result.files)}</p>`;
  $("use-latents").hidden = false;
}

function usePalette(latents) {
  state.palette = latents;
  for (const slot of Object.keys(state.slots)) state.slots[slot] = [];
  renderSlots();
  $("use-seed").hidden = !latents;
  $("start").value = 0;
  showSheet();
}

async function runDMaps() {
  if (state.lastClicked === undefined) {
    showError("click a sample on the sheet first");
    return;
  }
  const result = await api("feature-maps", { net: "d", seed: state.layout.seed, index: state.lastClicked });
  showDView(result, sampleName(state.lastClicked));
  shown("d-maps");
}

async function runDImage() {
  const file = $("d-upload").files[0];
  if (!file) {
    showError("choose an image file first");
    return;
  }
  showDView(await upload("d-image", "", file), file.name);
}

function showDView(result, what) {
  // D's score is sigmoid(D(x)): the probability that x is a real training image
  $("inside-d-result").innerHTML =
    `<p class="score">D(x) = ${result.report.d_probability.toFixed(6)} for ${what}</p>` +
    `<img src="${result.files["feature_maps_d.png"]}" alt="D's feature maps">` +
    `<p class="downloads">${downloads(result.files)}</p>`;
}

async function runInsideD(view, picture) {
  $("inside-d-result").textContent = "working...";
  try {
    const result = await api(view, view === "neighbours" ? { seed: state.layout.seed } : {});
    const pictures = Object.keys(result.files).filter((f) => f.endsWith(".png") && f.startsWith(picture));
    $("inside-d-result").innerHTML =
      pictures.map((f) => `<p>${f}</p><img src="${result.files[f]}" alt="${f}">`).join("") +
      `<p class="downloads">${downloads(result.files)}</p>`;
  } catch (e) {
    $("inside-d-result").textContent = "";
  }
}

const CURVES = { loss_D: "#c33", loss_G: "#36c", D_x: "#393", D_G_z: "#f90" };

function drawCurves(rows) {
  const svg = $("curves"), w = +svg.getAttribute("width"), h = +svg.getAttribute("height");
  if (!rows.length) { svg.innerHTML = ""; return; }
  const steps = rows.map((r) => r.step), x0 = Math.min(...steps), x1 = Math.max(...steps, x0 + 1);
  const values = rows.flatMap((r) => Object.keys(CURVES).map((k) => r[k]).filter((v) => v !== null));
  const y1 = Math.max(1, ...values);
  const px = (s) => 30 + (w - 40) * (s - x0) / (x1 - x0), py = (v) => h - 20 - (h - 30) * v / y1;
  const lines = Object.entries(CURVES).map(([key, colour]) => {
    const points = rows.filter((r) => typeof r[key] === "number")
      .map((r) => `${px(r.step).toFixed(1)},${py(r[key]).toFixed(1)}`).join(" ");
    return `<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${points}"><title>${key}</title></polyline>`;
  });
  svg.innerHTML = `<line x1="30" y1="${h - 20}" x2="${w - 10}" y2="${h - 20}" stroke="#999"/>` +
    `<text x="30" y="${h - 5}" font-size="11">step ${x0}</text>` +
    `<text x="${w - 80}" y="${h - 5}" font-size="11">step ${x1}</text>` +
    `<text x="2" y="14" font-size="11">${y1.toFixed(2)}</text>` + lines.join("");
  $("curves-legend").innerHTML = Object.entries(CURVES)
    .map(([k, c]) => `<span style="color:${c}">&#9644; ${k}</span>`).join("");
}

async function showTraining() {
  let result;
  try {
    result = await api("training", {});
  } catch (e) {
    $("training-view").hidden = true;  // a single checkpoint file: no run to show
    return;
  }
  $("training-view").hidden = false;
  $("training-run").textContent = `${result.run}: ${result.rows.length} logged rows`;
  drawCurves(result.rows);
  const slider = $("grid-step");
  const atEnd = +slider.value >= +slider.max;
  slider.max = Math.max(0, result.grids.length - 1);
  if (atEnd) slider.value = slider.max;  // follow a run that is still training
  const showGrid = () => {
    const g = result.grids[+slider.value];
    if (!g) return;
    $("grid").src = g.url;
    $("grid-name").textContent = g.name;
  };
  slider.oninput = () => { showGrid(); saveState(); };
  showGrid();
  const last = result.rows[result.rows.length - 1] || {};
  const shown = Object.fromEntries(Object.entries(last).filter(([k, v]) => typeof v === "number"));
  $("training-numbers").innerHTML = table(shown);
  $("warnings").innerHTML = result.warnings.map((w) => `<li>step ${w.step}: ${w.warning}</li>`).join("");
}

function wire() {
  $("sheet-form").onsubmit = (e) => { e.preventDefault(); showSheet(); };
  $("next-page").onclick = () => { $("start").value = +$("start").value + +$("n").value; showSheet(); };
  $("prev-page").onclick = () => {
    $("start").value = Math.max(0, +$("start").value - +$("n").value); showSheet();
  };
  const frame = $("sheet-frame");
  frame.onmousedown = (event) => {
    if (document.querySelector("input[name=target]:checked").value !== "box") return;
    event.preventDefault();
    state.dragging = { start: natural(event), end: null };
  };
  frame.onmousemove = (event) => {
    if (!state.dragging) return;
    state.dragging.end = natural(event);
    drawBoxes();
  };
  frame.onmouseup = (event) => {
    if (!state.dragging) return;
    state.dragging.end = natural(event);
    finishBox();
  };
  $("undo-box").onclick = () => { state.boxes.pop(); renderBoxes(); };
  $("run-forget").onclick = () => runForget();
  $("sheet").onload = drawBoxes;
  $("sheet").onclick = (event) => {
    if (document.querySelector("input[name=target]:checked").value === "box") return;
    const number = sampleAt(event);
    if (number === null) return;
    const target = document.querySelector("input[name=target]:checked").value;
    state.slots[target].push(number);
    state.lastClicked = number;
    renderSlots();
  };
  for (const button of document.querySelectorAll("[data-clear]")) {
    button.onclick = () => { state.slots[button.dataset.clear] = []; renderSlots(); };
  }
  $("run-arithmetic").onclick = () => runArithmetic().catch(() => {});
  $("arith-mode").onchange = () => {
    const direction = $("arith-mode").value === "direction";
    for (const el of document.querySelectorAll(".sum-only")) el.hidden = direction;
    for (const el of document.querySelectorAll(".direction-only")) el.hidden = !direction;
    saveState();
  };
  $("direction-step").oninput = showDirectionStep;
  $("walk-frame").oninput = () => { stopWalk(); showWalkFrame(); };
  $("walk-play").onclick = playWalk;
  $("run-d-image").onclick = () => runDImage().catch(() => {});
  $("run-walk").onclick = () => runWalk().catch(() => {});
  $("run-feature-maps").onclick = () => runFeatureMaps().catch(() => {});
  $("run-directions").onclick = () => runDirections().catch(() => {});
  $("run-d-maps").onclick = () => runDMaps().catch(() => {});
  $("run-guided").onclick = () => runInsideD("guided-backprop", "guided_backprop");
  $("run-neighbours").onclick = () => runInsideD("neighbours", "neighbours_");
  $("run-project").onclick = () => runProject().catch((e) => showError(String(e)));
  $("use-latents").onclick = () => usePalette(state.projected);
  $("use-seed").onclick = () => usePalette(null);
  $("sigmas").onchange = () => moveSample().catch(() => {});
  $("direction").onchange = () => moveSample().catch(() => {});
  setInterval(() => { if (!$("training-view").hidden) showTraining(); }, 5000);  // live while training
}

wire();
window.onhashchange = () => location.reload();  // a link pasted into this tab (replaceState fires no event)
state.restoring = true;
const views = restoreState();
$("arith-mode").onchange();
renderSlots();
renderBoxes();
loadSources()
  .then(() => Promise.all([showSheet(), showTraining()]))
  .then(() => rerun(views))
  .catch((e) => showError(String(e)))
  .finally(() => { state.restoring = false; saveState(); });
