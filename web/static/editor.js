// The face editor page: a method, a seed or a pasted z, one slider per property; every slider event
// asks the server for the edited image. One request at a time: events that come while one is on its
// way are answered by the next request, which carries the newest slider positions (no stale queue).
"use strict";

const state = { cfg: null, method: null, desc: null, zText: "", alphas: {}, judges: [], loading: false };
let inflight = false;
let waiting = [];          // time stamps of slider / control events not yet answered by a displayed image
let seq = 0;
// figures read by the browser test: latency of every event (event -> image decoded), errors, renders
const stats = { latencies: [], renders: 0, errors: 0, lastError: "", lastMeasured: null, lastMs: null, saved: [] };
window.editor = {
  stats,
  idle: () => !inflight && waiting.length === 0 && !state.loading,
  body: () => body(),
  tryBody: (b) => send(b),
};

const $ = (id) => document.getElementById(id);

function say(text, info) {
  const m = $("message");
  m.textContent = text || "";
  m.className = info ? "info" : "";
}

const api = apiClient((why) => "the editor server is not reachable (" + why + "); restart run_editor.py");

function body() {
  const b = { method: state.method, alphas: { ...state.alphas }, conditional: $("conditional").checked, seq: ++seq };
  if (state.zText) b.z = state.zText; else b.seed = $("seed").value === "" ? null : Number($("seed").value);
  if (state.desc && state.desc.layers && !$("layers-own").checked) {
    b.layers = [Number($("layer-start").value), Number($("layer-stop").value)];
  }
  return b;
}

function fmt(x) { return (x >= 0 ? "+" : "") + x.toFixed(2); }

function request(t) {
  waiting.push(t === undefined ? performance.now() : t);
  if (!inflight) send();
}

async function send(override) {
  inflight = true;
  const events = waiting;
  waiting = [];
  const b = override || body();
  try {
    const r = await api("POST", "/api/editor/render", b);
    const img = $("face");
    img.src = r.image;
    await img.decode();
    const now = performance.now();
    for (const t of events) stats.latencies.push(now - t);
    stats.renders += 1;
    stats.lastMeasured = r.measured;
    stats.lastMs = r.ms;
    showMeasured(r.measured);
    $("img-caption").textContent = (b.z ? "pasted z" : "seed " + b.seed) + (r.group ? ", group " + r.group : "");
    $("timing").textContent = "server " + r.ms.total.toFixed(0) + " ms (edit " + r.ms.edit.toFixed(0) +
      ", judges " + r.ms.measure.toFixed(0) + ")";
    say("");
  } catch (e) {
    stats.errors += 1;
    stats.lastError = e.message;
    say(e.message);
  } finally {
    inflight = false;
    if (waiting.length) send();
  }
}

function showMeasured(m) {
  state.cfg.properties.forEach((p) => {
    state.judges.forEach((j, k) => {
      const v = m[j] ? m[j][p] : null;
      $("meas-" + k + "-" + p).textContent = v === null || v === undefined ? "–" : v.toFixed(3);
    });
  });
}

function buildSliders() {
  const tb = document.querySelector("#sliders tbody");
  const max = state.cfg.alpha_max;
  const units = { evaluator: "world units", property_cnn: "label units" };
  state.judges.forEach((j, k) => {
    $("judge-head-" + k).textContent = j.replace("_", " ") + (j === state.cfg.truth ? " (truth)" : "");
    $("judge-head-" + k).title = "measured by the " + j + " on the image shown" + (units[j] ? ", " + units[j] : "");
  });
  state.cfg.properties.forEach((p) => {
    state.alphas[p] = 0;
    const tr = document.createElement("tr");
    tr.id = "row-" + p;
    tr.innerHTML = `<td>${p}</td><td><input type="range" id="alpha-${p}" min="${-max}" max="${max}" step="0.05" value="0"
      aria-label="${p} alpha"></td><td class="alpha" id="alpha-${p}-v">+0.00</td>` +
      state.judges.map((j, k) => `<td class="meas" id="meas-${k}-${p}">–</td>`).join("");
    tb.appendChild(tr);
    const s = tr.querySelector("input");
    s.addEventListener("input", (e) => {
      state.alphas[p] = Number(s.value);
      $("alpha-" + p + "-v").textContent = fmt(state.alphas[p]);
      request(e.timeStamp);
    });
  });
}

async function chooseMethod(key) {
  state.method = key;
  state.loading = true;
  say("loading " + key + " …", true);
  try {
    state.desc = await api("GET", "/api/editor/method/" + encodeURIComponent(key));
  } catch (e) {
    stats.errors += 1;
    say(e.message);
    return;
  } finally {
    state.loading = false;
  }
  const d = state.desc;
  $("method-note").textContent = d.source + (d.note ? " — " + d.note : "");
  state.cfg.properties.forEach((p) => $("row-" + p).classList.toggle("off", !d.properties.includes(p)));
  $("layer-row").classList.toggle("off", !d.layers);
  ["layer-start", "layer-stop", "layers-own"].forEach((id) => { $(id).disabled = !d.layers; });
  $("conditional").disabled = !d.conditional;
  if (!d.conditional) $("conditional").checked = false;
  say("");
  request();
}

function layerLabels() {
  $("layer-start-v").textContent = $("layer-start").value;
  $("layer-stop-v").textContent = $("layer-stop").value;
}

async function save() {
  try {
    const r = await api("POST", "/api/editor/save", body());
    stats.saved.push(r.folder);
    say("saved to " + r.folder + " (" + r.files.join(", ") + ")", true);
  } catch (e) {
    stats.errors += 1;
    stats.lastError = e.message;
    say(e.message);
  }
}

async function init() {
  try {
    state.cfg = await api("GET", "/api/editor/config");
  } catch (e) {
    say(e.message);
    return;
  }
  const cfg = state.cfg;
  $("title").textContent = cfg.title;
  state.judges = cfg.judges.slice(0, 2);
  const sel = $("method");
  for (const gen of ["v3", "v9"]) {
    const ms = cfg.methods.filter((m) => m.generator === gen);
    if (!ms.length) continue;
    const og = document.createElement("optgroup");
    og.label = gen === "v3" ? "FineTune-v3" : "FineTune-v9";
    ms.forEach((m) => { const o = document.createElement("option"); o.value = m.key; o.textContent = m.title; og.appendChild(o); });
    sel.appendChild(og);
  }
  buildSliders();
  $("layer-start").max = cfg.num_layers - 1;
  $("layer-stop").max = cfg.num_layers;
  $("layer-stop").value = cfg.num_layers;
  layerLabels();
  sel.addEventListener("change", () => chooseMethod(sel.value));
  $("seed").addEventListener("change", (e) => { state.zText = ""; request(e.timeStamp); });
  $("seed-prev").addEventListener("click", (e) => { $("seed").value = Math.max(0, Number($("seed").value) - 1); state.zText = ""; request(e.timeStamp); });
  $("seed-next").addEventListener("click", (e) => { $("seed").value = Number($("seed").value) + 1; state.zText = ""; request(e.timeStamp); });
  $("use-z").addEventListener("click", (e) => { state.zText = $("z").value.trim(); request(e.timeStamp); });
  ["layer-start", "layer-stop"].forEach((id) => $(id).addEventListener("input", (e) => { layerLabels(); if (!$("layers-own").checked) request(e.timeStamp); }));
  $("layers-own").addEventListener("change", (e) => request(e.timeStamp));
  $("conditional").addEventListener("change", (e) => request(e.timeStamp));
  $("reset").addEventListener("click", (e) => {
    cfg.properties.forEach((p) => { state.alphas[p] = 0; $("alpha-" + p).value = 0; $("alpha-" + p + "-v").textContent = fmt(0); });
    request(e.timeStamp);
  });
  $("save").addEventListener("click", save);
  const notes = cfg.notes.concat(Object.entries(cfg.judge_notes).map(([j, n]) => j + ": " + n));
  $("notes").textContent = notes.join("; ");
  await chooseMethod(sel.value);
  document.body.dataset.ready = "1";
}

init();
