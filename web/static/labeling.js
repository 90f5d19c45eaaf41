// The labelling page: one stage-1 image at a time, a key per label value.
// Actions (keys, buttons, replay) go through one queue and run one at a time, each waiting for
// the server's reply (the label is on disk then), so fast typing never reorders or loses a label.
"use strict";

const state = {
  cfg: null,          // /api/labeling/config
  view: null,         // the current image's view (server reply)
  keyMap: {},         // key -> {prop, value}
  history: [],        // images this tab finished, for undo
  replay: false,
};
const queue = [];
let busy = false;
// figures read by the browser test: keys taken, labels acknowledged, page time of the first key / last reply
const stats = { keys: 0, acked: [], firstKeyAt: null, lastAckAt: null, errors: 0 };
window.labeling = {
  stats,
  idle: () => !busy && queue.length === 0,
  current: () => (state.view ? state.view.img_no : null),
};

const $ = (id) => document.getElementById(id);

const api = apiClient((why) => "the labelling server is not reachable (" + why + "): this key was not saved; " +
                                "restart run_labeling.py and reload the page, it resumes where it stopped");

function say(text, info) {
  const m = $("message");
  m.textContent = text || "";
  m.className = info ? "info" : "";
}

function enqueue(action) {
  queue.push(action);
  pump();
}

async function pump() {
  if (busy) return;
  busy = true;
  document.body.dataset.busy = "1";
  while (queue.length) {
    const action = queue.shift();
    try {
      await action();
    } catch (e) {
      stats.errors += 1;
      queue.length = 0;           // later keys were meant for a state that did not happen
      say(e.message);
    }
  }
  busy = false;
  document.body.dataset.busy = "0";
}

function buildPanel() {
  const props = $("props");
  props.innerHTML = "";
  for (const p of state.cfg.properties) {
    const row = document.createElement("div");
    row.className = "prop";
    row.dataset.prop = p;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p;
    row.appendChild(name);
    for (const k of state.cfg.keys[p]) {
      state.keyMap[k.key] = { prop: p, value: k.value };
      const b = document.createElement("button");
      b.dataset.value = String(k.value);
      b.innerHTML = `<kbd>${k.key}</kbd> ${k.meaning}`;
      b.addEventListener("click", () => enqueue(() => label(p, k.value)));
      row.appendChild(b);
    }
    props.appendChild(row);
  }
}

function render(view) {
  state.view = view;
  const img = $("face");
  const src = `/api/labeling/png/${view.img_no}`;
  if (img.getAttribute("src") !== src) img.setAttribute("src", src);
  img.dataset.imgNo = String(view.img_no);
  $("img-label").textContent = `image ${String(view.img_no).padStart(6, "0")}`;
  const st = $("status");
  const given = Object.keys(view.labels).length;
  st.className = view.complete ? "complete" : given ? "partial" : view.skipped ? "skipped" : "";
  st.textContent = view.complete ? "labelled" : given ? `${given} of ${state.cfg.properties.length} labels`
                                   : view.skipped ? "skipped" : "unlabelled";
  for (const row of document.querySelectorAll(".prop")) {
    const v = view.labels[row.dataset.prop];
    for (const b of row.querySelectorAll("button")) b.classList.toggle("on", v !== undefined && String(v) === b.dataset.value);
  }
  const p = view.progress;
  const bar = $("progress");
  bar.max = Math.max(1, p.total);
  bar.value = p.labelled;
  const pct = p.total ? (100 * p.labelled / p.total).toFixed(1) : "0.0";
  $("progress-text").textContent = `${p.labelled} / ${p.total} labelled (${pct} %)`;
  if (view.next_unlabelled !== null && view.next_unlabelled !== view.img_no) {
    new Image().src = `/api/labeling/png/${view.next_unlabelled}`;    // preload the next image
  }
  if (state.replay && !view.complete) enqueue(replayStep);
  if (view.next_unlabelled === null && view.complete) say("every image is labelled", true);
}

async function label(prop, value) {
  const before = state.view;
  const view = await api("POST", "/api/labeling/label", { img_no: before.img_no, prop, value });
  stats.acked.push([view.img_no, prop, value]);
  stats.lastAckAt = performance.now();
  say("");
  if (view.complete && !before.complete) {
    state.history.push(view.img_no);
    if (view.next_unlabelled !== null) {
      render(await api("GET", `/api/labeling/images/${view.next_unlabelled}`));
      return;
    }
  }
  render(view);
}

async function undo() {
  const v = state.view;
  let target = null;
  if (v && !v.complete && Object.keys(v.labels).length) target = v.img_no;   // clear the unfinished image first
  else if (state.history.length) target = state.history.pop();
  const view = await api("POST", "/api/labeling/undo", { img_no: target });
  say(`undone: image ${view.img_no}`, true);
  render(view);
}

async function skip() {
  render(await api("POST", "/api/labeling/skip", { img_no: state.view.img_no }));
}

async function goto(n) {
  render(await api("POST", "/api/labeling/goto", { img_no: n }));
}

async function replayStep() {
  const v = state.view;
  if (!state.replay || v.complete) return;
  const e = await api("GET", `/api/labeling/emulated/${v.img_no}`);
  const todo = state.cfg.properties.filter((p) => v.labels[p] !== e.labels[p]);
  for (const p of todo) queue.unshift(() => label(p, e.labels[p]));   // run before anything typed meanwhile
  if (!todo.length) await skip();
}

function onKey(ev) {
  if (ev.target instanceof HTMLInputElement) {
    if (ev.key === "Escape") ev.target.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !state.view) return;
  const k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  let action = null;
  if (state.keyMap[k]) {
    const { prop, value } = state.keyMap[k];
    action = () => label(prop, value);
    stats.keys += 1;
    if (stats.firstKeyAt === null) stats.firstKeyAt = performance.now();
  } else if (k === "Backspace" || k === "u") action = undo;
  else if (k === " " || k === "ArrowRight") action = skip;
  else if (k === "ArrowLeft") action = () => (state.view.prev === null ? null : goto(state.view.prev));
  else if (k === "j") {
    ev.preventDefault();
    $("jump").value = "";
    $("jump").focus();
    return;
  }
  if (action) {
    ev.preventDefault();
    enqueue(action);
  }
}

async function start() {
  try {
    state.cfg = await api("GET", "/api/labeling/config");
    $("title").textContent = state.cfg.title;
    buildPanel();
    if (state.cfg.emulated) {
      $("replay-box").hidden = false;
      state.replay = new URLSearchParams(location.search).get("replay") === "1";
      $("replay").checked = state.replay;
    }
    const want = new URLSearchParams(location.search).get("img");
    render(want !== null ? await api("POST", "/api/labeling/goto", { img_no: Number(want) })
                         : await api("GET", "/api/labeling/resume"));
  } catch (e) {
    say(e.message);
  }
  document.addEventListener("keydown", onKey);
  $("undo").addEventListener("click", () => enqueue(undo));
  $("skip").addEventListener("click", () => enqueue(skip));
  $("prev").addEventListener("click", () => enqueue(() => (state.view.prev === null ? null : goto(state.view.prev))));
  $("jump-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const raw = $("jump").value.trim();
    $("jump").value = "";
    $("jump").blur();
    if (!/^\d+$/.test(raw)) { say(`jump: ${JSON.stringify(raw)} is not an image number`); return; }
    enqueue(() => goto(Number(raw)));
  });
  $("replay").addEventListener("change", (ev) => {
    state.replay = ev.target.checked;
    if (state.replay) enqueue(replayStep);
  });
  document.body.dataset.ready = "1";
}

start();
