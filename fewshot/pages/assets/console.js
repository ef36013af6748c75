// The fewshot console: one page over the public /v1 API, nothing else. No framework and no build
// step; every element is built with `el` (text set as text, never parsed as HTML: model names,
// labels and texts come from users). The API key lives in this tab's sessionStorage only and goes
// out as the X-API-Key header, never in a URL. The API's own error messages are shown as they are.
"use strict";

const KEY_STORAGE = "fewshot.apiKey";
const POLL_ACTIVE_MS = 1000; // a running job's progress, fetched from GET /v1/jobs/{job_id}
const POLL_LIST_MS = 10000; // the job list, while the Jobs screen is open (jobs queued elsewhere)
const JOBS_PAGE = 50; // jobs per page of GET /v1/jobs
const MAX_POLLED_JOBS = 10; // the newest active ones; a long queue's others move with the list
const POLL_BATCHES_MS = 2000; // the batch list, while the Batches screen is open and a batch is unfinished
const BATCHES_PAGE = 20; // batches per page of GET /v1/batches
const FLASH_MS = 1500; // a new row's highlight (tr.new: its animation), not started again by later redraws
const SCREENS = ["models", "jobs", "batches", "try", "train"];
const ACTIVE = new Set(["pending", "running"]);
const UNFINISHED_BATCH = new Set(["validating", "in_progress", "finalizing", "cancelling"]);
const CANCELLABLE_BATCH = new Set(["validating", "in_progress"]); // finalizing: its results are being written
const MAX_ROW_ERRORS = 10;
const EXAMPLES_PAGE = 100; // examples per page of GET /v1/models/{name}/examples
const SUGGESTIONS = 10; // texts asked of POST /v1/models/{name}/suggest per round
const SUSPECTS = 20; // examples asked of GET /v1/models/{name}/suspects
const NEAREST = 3; // training examples asked of POST /v1/explain per text (its top_k)
const MAX_TARGET_PAGES = 50; // pages of the example set read to find a linked example (5,000 examples)

const state = {
  models: [], // GET /v1/models: [{model_name, versions: [newest first]}]
  model: null, // the model name shown
  version: null, // the version shown (model_version)
  jobs: [], // GET /v1/jobs: its first page, newest first, refreshed
  olderJobs: [], // the pages after it that "Show older jobs" fetched, kept across refreshes
  olderCursor: null, // next_cursor for the next older page; null: no more
  examples: null, // the parsed CSV, ready to train on
  newJob: null, // the job just submitted from the Train screen
  jobsListedAt: 0, // when the job list was last fetched by the poller (ms)
  exampleSet: null, // the shown model's example set: {model, rows (pages so far), total, digest, nextCursor}
  inbox: null, // suggested texts to label: {model, cards, at (the card shown), labelled}
  suspects: null, // the shown model's suspect labels: {model, rows (not fixed or kept yet), thin}
  batches: [], // GET /v1/batches: its first page, newest first, refreshed
  olderBatches: [], // the pages after it that "Show older batches" fetched
  moreBatches: false, // has_more of the last page fetched: an older page exists
  batchTimer: null, // the next poll of the batch list (setTimeout), while one is unfinished
  files: new Map(), // file id → its FileObject (GET /v1/files/{id}), or null: asked, or gone
  newBatch: null, // the batch just submitted from the Batches screen: {id, at (ms)}
  target: null, // an example linked to (#models/{name}/examples/{id}): {model, id, pages (read to find it), found}
  cards: 0, // prediction cards drawn on Try it (their elements' ids)
};

// ---------------------------------------------------------------------------------------- DOM

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function fixed(value, digits = 3) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

function capitalized(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function percent(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value * 100)}%`;
}

function when(timestamp) {
  if (!timestamp) return "—";
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? timestamp : date.toLocaleString();
}

/** A bar for a value in [0, 1], with the number written beside it (the bar alone says too little). */
function meter(value, kind = "", label = "") {
  const fill = el("div", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, value ?? 0)) * 100}%`;
  return el("div", { class: `meter ${kind}`, role: "img", "aria-label": `${label} ${fixed(value)}`.trim() },
    el("div", { class: "track" }, fill), el("span", { class: "value", "aria-hidden": "true" }, fixed(value)));
}

function notify(message, isError = false) {
  const box = $("notice");
  box.replaceChildren(el("div", { class: isError ? "error" : "" }, message));
}

function clearNotice() {
  $("notice").replaceChildren();
}

// ---------------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** A request to the API with the key, if any; the response whatever its status, or an ApiError
 * when the server did not answer at all. */
async function request(method, path, headers = {}, body = undefined) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const init = { method, headers: key ? { ...headers, "X-API-Key": key } : headers, cache: "no-store" };
  if (body !== undefined) init.body = body;
  try {
    return await fetch(path, init);
  } catch (failure) {
    throw new ApiError(0, `the server did not answer (${failure.message})`, null);
  }
}

/** The ApiError for a response that is not ok, carrying the API's own `error` message. A 401 asks for the key. */
function refusal(response, text) {
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  const message = payload && typeof payload.error === "string"
    ? payload.error : `HTTP ${response.status} ${response.statusText}`.trim();
  if (response.status === 401) askForKey(message);
  return new ApiError(response.status, message, payload);
}

/** One call to the API (a path relative to the console, e.g. "v1/models"); the parsed JSON body,
 * or an ApiError carrying the API's own `error` message. A body is sent as JSON, a FormData as
 * multipart (an upload). A 401 asks for the key. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  let sent = body;
  if (body !== undefined && !(body instanceof FormData)) { // FormData: the browser writes its multipart type
    headers["Content-Type"] = "application/json";
    sent = JSON.stringify(body);
  }
  const response = await request(method, path, headers, sent);
  const text = await response.text();
  if (!response.ok) throw refusal(response, text);
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** The API's message for a failed call, for the screen's error box. */
function failureText(failure) {
  if (failure instanceof ApiError) {
    return failure.status ? `${failure.message} (HTTP ${failure.status})` : failure.message;
  }
  return String(failure);
}

// ---------------------------------------------------------------------------------------- the key

function askForKey(message) {
  const dialog = $("key-dialog");
  const refused = sessionStorage.getItem(KEY_STORAGE) !== null;
  sessionStorage.removeItem(KEY_STORAGE); // wrong or revoked: not sent again
  $("forget-key").hidden = true;
  $("key-error").textContent = !message ? ""
    : refused ? `The server refused this key: ${message}` : `The server answered: ${message}`;
  if (!dialog.open) {
    $("key-input").value = "";
    dialog.showModal();
  }
  $("key-input").focus();
}

function setUpKey() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) {
      $("key-error").textContent = "Type the API key the server was started with (API_KEY).";
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-dialog").close();
    $("forget-key").hidden = false;
    start();
  });
  // Escape would leave a console that can do nothing: the dialog stays until a key is given.
  $("key-dialog").addEventListener("cancel", (event) => event.preventDefault());
  $("forget-key").hidden = !sessionStorage.getItem(KEY_STORAGE);
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("forget-key").hidden = true;
    askForKey("");
  });
}

// ---------------------------------------------------------------------------------------- screens

/** What the hash names: a screen ("#jobs"), and on the models screen a model and one example of its set
 * ("#models/intents/examples/{id}": an explanation's nearest examples link there). */
function route() {
  let parts;
  try {
    parts = location.hash.replace("#", "").split("/").map(decodeURIComponent);
  } catch {
    parts = [];
  }
  const screen = SCREENS.includes(parts[0]) ? parts[0] : "models";
  if (screen !== "models" || !parts[1]) return { screen };
  return { screen, model: parts[1], example: parts[2] === "examples" && parts[3] ? parts[3] : null };
}

function currentScreen() {
  return route().screen;
}

function exampleLink(modelName, exampleId) {
  return `#models/${encodeURIComponent(modelName)}/examples/${encodeURIComponent(exampleId)}`;
}

/** A model (and example) the hash names is shown: chosen in the list, its example set read to that example. */
function followRoute() {
  const wanted = route();
  if (!wanted.model) return;
  state.model = wanted.model;
  state.version = null;
  state.target = wanted.example ? { model: wanted.model, id: wanted.example, pages: 0, found: false } : null;
  if (state.models.length) {
    renderModelList();
    renderModel();
  }
}

function showScreen(focus = true) {
  const screen = currentScreen();
  followRoute();
  for (const name of SCREENS) $(`screen-${name}`).hidden = name !== screen;
  for (const link of document.querySelectorAll("nav a[data-screen]")) {
    if (link.dataset.screen === screen) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (focus) $(`${screen}-title`).focus();
  if (screen === "jobs") refreshJobs();
  if (screen === "batches") refreshBatches();
  else stopPollingBatches();
}

// ---------------------------------------------------------------------------------------- models

async function refreshModels() {
  try {
    state.models = (await api("GET", "v1/models")).models;
  } catch (failure) {
    if (failure.status !== 401) notify(`Could not list the models: ${failureText(failure)}`, true);
    return false;
  }
  if (!state.models.some((model) => model.model_name === state.model)) {
    state.model = state.models.length ? state.models[0].model_name : null;
    state.version = null;
  }
  renderModelList();
  renderModel();
  fillTryModels();
  return true;
}

function shownModel() {
  return state.models.find((model) => model.model_name === state.model) || null;
}

/** The version a model serves: its newest one not held back by a retrain's promotion rule. */
function servedVersion(model) {
  return model.versions.find((version) => !version.held) || null;
}

function headline(version) {
  // A multi-label version is scored by micro F1 (its subset accuracy is harsh on a few texts).
  return version.task === "multi_label"
    ? { name: "micro F1", value: version.micro_f1 } : { name: "accuracy", value: version.accuracy };
}

function renderModelList() {
  const list = $("model-list");
  if (!state.models.length) {
    list.replaceChildren(el("li", { class: "muted" }, "No models yet: train one on the Train screen."));
    return;
  }
  list.replaceChildren(...state.models.map((model) => {
    const newest = model.versions[0];
    const score = headline(newest);
    return el("li", {},
      el("button", {
        type: "button", "aria-pressed": String(model.model_name === state.model), "data-model": model.model_name,
        onclick: () => {
          state.model = model.model_name;
          state.version = null;
          state.target = null;
          if (route().model) history.replaceState(null, "", "#models"); // no longer the linked model
          renderModelList();
          renderModel();
        },
      },
      el("span", { class: "name" }, model.model_name),
      el("span", { class: "facts" },
        `${model.versions.length} version${model.versions.length === 1 ? "" : "s"} · ${score.name} ${fixed(score.value)}`)));
  }));
}

function renderModel() {
  const detail = $("model-detail");
  const model = shownModel();
  if (!model) {
    detail.replaceChildren();
    return;
  }
  const versions = model.versions;
  if (!versions.some((version) => version.model_version === state.version)) state.version = versions[0].model_version;
  const shown = versions.find((version) => version.model_version === state.version);
  detail.replaceChildren(
    el("div", { class: "panel" },
      el("h2", {}, model.model_name),
      versionTable(model),
      versions.length > 1 ? compareForm(model) : null,
      el("div", { id: "comparison" })),
    el("div", { class: "panel", id: "version-detail" }, versionDetail(shown)),
    el("div", { class: "panel", id: "example-set" }, el("h3", {}, "Example set"), el("p", { class: "muted" }, "Loading…")),
    el("div", { class: "panel", id: "inbox" }, ...inboxPanel(model)));
  loadExamples(model);
  renderCards(model);
  renderSuspects(model);
}

function versionTable(model) {
  const served = servedVersion(model);
  const rows = model.versions.map((version) => {
    const score = headline(version);
    return el("tr", { class: version.model_version === state.version ? "selected" : "", "data-version": version.model_version },
      el("td", {}, el("code", {}, version.model_version), " ",
        version === served ? el("span", { class: "badge served", title: `${model.model_name} serves this version` }, "served") : null,
        version.held ? el("span", { class: "badge held", title: `Not served: ${version.held}` }, "held") : null),
      el("td", {}, when(version.created_at)),
      el("td", {}, version.strategy),
      el("td", { class: "number" }, version.num_examples ?? "—"),
      el("td", { class: "number" }, version.eval_num_examples),
      el("td", { class: "number", title: score.name }, fixed(score.value)),
      el("td", {}, el("div", { class: "actions" },
        el("button", {
          type: "button", "aria-label": `Show version ${version.model_version}`,
          onclick: () => {
            state.version = version.model_version;
            renderModel();
            $("version-detail").querySelector("h3")?.focus();
          },
        }, "Show"),
        el("button", {
          type: "button", class: "danger", "aria-label": `Delete version ${version.model_version}`,
          onclick: () => confirmDelete(version),
        }, "Delete"))));
  });
  return el("table", { class: "versions" },
    el("thead", {}, el("tr", {},
      el("th", {}, "Version"), el("th", {}, "Created"), el("th", {}, "Strategy"),
      el("th", { class: "number" }, "Examples"), el("th", { class: "number" }, "Evaluated on"),
      el("th", { class: "number" }, capitalized(headline(model.versions[0]).name)),
      el("th", {}, el("span", { class: "visually-hidden" }, "Actions")))),
    el("tbody", {}, rows));
}

function versionDetail(version) {
  const score = headline(version);
  const children = [
    el("h3", { tabindex: "-1" }, `Version ${version.model_version}`),
    el("div", { class: "facts-line" },
      el("span", {}, `${score.name} `, el("b", {}, fixed(score.value))),
      version.macro_f1 !== null && version.macro_f1 !== undefined
        ? el("span", {}, "macro F1 ", el("b", {}, fixed(version.macro_f1))) : null,
      el("span", {}, "evaluated on ", el("b", {}, version.eval_num_examples),
        version.eval_source ? ` (${version.eval_source === "holdout" ? "held-out examples" : "eval_examples"})` : ""),
      el("span", {}, "task ", el("b", {}, version.task.replace("_", "-"))),
      el("span", {}, "base model ", el("b", {}, version.base_model)),
      version.training_duration_seconds !== null && version.training_duration_seconds !== undefined
        ? el("span", {}, "trained in ", el("b", {}, `${version.training_duration_seconds.toFixed(1)} s`)) : null,
      el("span", {}, "tag ", el("code", {}, version.tag))),
  ];
  if (version.promotion && version.promotion.served_score !== null && version.promotion.served_score !== undefined) {
    const promotion = version.promotion;
    children.push(el("p", { class: "facts-line", id: "retrain-effect" },
      `Retrained: ${promotion.metric.replace("_", " ")} ${fixed(promotion.served_score)} (${promotion.served_version}) `
      + `→ ${fixed(promotion.new_score)} on ${promotion.evaluation_examples} `
      + (promotion.method === "cross_fitted" ? "texts of the set, each left out of both versions' refitted heads; "
        : "evaluation texts neither version was trained on; ")
      + (promotion.promoted ? "served." : `held: ${promotion.reason}`)));
  }
  children.push(el("h3", {}, "Precision, recall and F1 per label"));
  children.push(labelMetricsTable(version));
  children.push(el("h3", {}, "Confusion matrix"));
  children.push(confusionMatrix(version));
  const calibrations = {
    cross_fitted: "the training examples, each scored without its fold, and the evaluation ones",
    evaluation: "the evaluation examples (the fine-tuned body saw the training ones)",
    training: "the training examples, which the fine-tuned body saw: the coverage is optimistic",
  };
  if (version.scope && version.scope.threshold !== null && version.scope.threshold !== undefined) {
    const scope = version.scope;
    children.push(el("h3", {}, "None of these"));
    children.push(el("p", { id: "scope-line" },
      `With abstain, a text whose similarity to the nearest training example is under ${fixed(scope.threshold)} gets `
      + `no label: set on ${scope.calibration_examples} texts (${calibrations[scope.calibration]}) to keep `
      + `${percent(scope.coverage)} of in-scope texts; it kept ${percent(scope.in_scope_kept)} of them, each by a `
      + `threshold set on the other half`
      + (scope.out_of_scope_examples ? `, and refused ${percent(scope.out_of_scope_refused)} of ${scope.out_of_scope_examples} none-of-these evaluation texts.` : ".")));
  } else if (version.abstention && version.abstention.threshold !== null) {
    const abstention = version.abstention;
    children.push(el("h3", {}, "None of these"));
    children.push(el("p", {},
      `With abstain, a text whose top probability is under ${fixed(abstention.threshold)} gets no label: set to keep `
      + `${percent(abstention.coverage)} of in-scope texts; on the evaluation examples it kept ${percent(abstention.in_scope_kept)}`
      + (abstention.out_of_scope_examples ? ` and refused ${percent(abstention.out_of_scope_refused)} of ${abstention.out_of_scope_examples} none-of-these texts.` : ".")));
  }
  return children;
}

function labelMetricsTable(version) {
  const metrics = version.label_metrics;
  if (!metrics) {
    return el("p", { class: "muted" }, "No per-label scores: this version had no evaluation examples "
      + "(train with at least 4 examples per label, or with eval_examples).");
  }
  const thresholds = version.thresholds;
  const rows = Object.entries(metrics).map(([label, scores]) => el("tr", { "data-label": label },
    el("th", { scope: "row" }, label),
    el("td", {}, meter(scores.precision, "precision", `${label} precision`)),
    el("td", {}, meter(scores.recall, "recall", `${label} recall`)),
    el("td", {}, meter(scores.f1, "f1", `${label} F1`)),
    el("td", { class: "number" }, scores.support),
    thresholds ? el("td", { class: "number" }, fixed(thresholds[label])) : null));
  return el("table", { class: "label-metrics" },
    el("thead", {}, el("tr", {}, el("th", {}, "Label"), el("th", {}, "Precision"), el("th", {}, "Recall"),
      el("th", {}, "F1"), el("th", { class: "number" }, "Support"),
      thresholds ? el("th", { class: "number" }, "Threshold") : null)),
    el("tbody", {}, rows));
}

function confusionMatrix(version) {
  const matrix = version.confusion_matrix;
  if (!matrix) {
    const why = version.task === "multi_label"
      ? "a multi-label version has no single answer per text: its per-label scores above say what it gets right."
      : "this version has none (no evaluation examples, or it was trained before versions kept one).";
    return el("p", { class: "muted" }, `No confusion matrix: ${why}`);
  }
  const names = matrix.none_of_these ? [...matrix.labels, "(none of these)"] : matrix.labels;
  const header = el("tr", {}, el("th", { scope: "col" }, el("span", { class: "muted" }, "true ↓ answered →")),
    names.map((name) => el("th", { scope: "col", class: "column", title: name }, name)));
  const rows = matrix.counts.map((row, i) => {
    const total = row.reduce((sum, count) => sum + count, 0);
    return el("tr", {}, el("th", { scope: "row" }, names[i]), row.map((count, j) => {
      const share = total ? count / total : 0;
      const cell = el("td", {
        class: `${i === j ? "correct" : ""} ${share > 0.55 ? "dark" : ""}`.trim(),
        title: `${count} of ${total} ${names[i]} texts answered ${names[j]}`,
        "data-count": count,
      }, count);
      // The heat: the share of the true label's texts in this cell (rows compare even when labels differ in size).
      cell.style.backgroundColor = `rgba(31, 78, 121, ${(0.06 + 0.9 * share).toFixed(3)})`;
      if (!count) cell.style.backgroundColor = "#f4f6f9";
      return cell;
    }));
  });
  return el("div", { class: "matrix-wrap" },
    el("table", { class: "matrix", "aria-label": "Confusion matrix: rows are true labels, columns the answers" },
      el("thead", {}, header), el("tbody", {}, rows)),
    el("p", { class: "legend" }, `Counts of the ${version.eval_num_examples} evaluation examples; colour: the share `
      + "of the row's texts; outlined: answered right."));
}

function compareForm(model) {
  const options = (selected) => model.versions.map((version, index) => el("option", {
    value: version.model_version, selected: version.model_version === selected,
  }, `${version.model_version}${index === 0 ? " (served)" : ""}`));
  const older = el("select", { id: "compare-a", "aria-label": "Earlier version" }, options(model.versions[1].model_version));
  const newer = el("select", { id: "compare-b", "aria-label": "Later version" }, options(model.versions[0].model_version));
  return el("form", {
    class: "compare-form", novalidate: true,
    onsubmit: (event) => {
      event.preventDefault();
      const find = (id) => model.versions.find((version) => version.model_version === $(id).value);
      $("comparison").replaceChildren(comparison(find("compare-a"), find("compare-b")));
    },
  }, el("span", {}, "Compare"), older, el("span", {}, "with"), newer, el("button", { type: "submit" }, "Compare"));
}

function delta(before, after) {
  if (before === null || before === undefined || after === null || after === undefined) {
    return el("td", { class: "number delta" }, "—");
  }
  const change = after - before;
  const sign = change > 0 ? "+" : change < 0 ? "−" : "±";
  const direction = change > 0 ? " up" : change < 0 ? " down" : "";
  return el("td", { class: `number delta${direction}`, "data-delta": change.toFixed(6) },
    `${sign}${Math.abs(change).toFixed(3)}`);
}

function comparison(a, b) {
  const scoreA = headline(a);
  const scoreB = headline(b);
  const labels = [...new Set([...Object.keys(a.label_metrics || {}), ...Object.keys(b.label_metrics || {})])];
  const f1 = (version, label) => version.label_metrics?.[label]?.f1;
  const rows = [
    el("tr", { "data-metric": "score" }, el("th", { scope: "row" }, scoreB.name),
      el("td", { class: "number" }, fixed(scoreA.value)), el("td", { class: "number" }, fixed(scoreB.value)),
      delta(scoreA.value, scoreB.value)),
    ...labels.map((label) => el("tr", { "data-label": label }, el("th", { scope: "row" }, `F1 ${label}`),
      el("td", { class: "number" }, fixed(f1(a, label))), el("td", { class: "number" }, fixed(f1(b, label))),
      delta(f1(a, label), f1(b, label)))),
  ];
  return el("table", { class: "comparison" },
    el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { class: "number" }, a.model_version),
      el("th", { class: "number" }, b.model_version), el("th", { class: "number" }, "change"))),
    el("tbody", {}, rows));
}

// ----------------------------------------------------------------------------- confirm and delete

function askToConfirm(title, text, action) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-form").onsubmit = async (event) => {
    event.preventDefault();
    dialog.close();
    await action();
  };
  $("confirm-cancel").onclick = () => dialog.close();
  dialog.showModal();
  $("confirm-cancel").focus(); // the safe choice first: Enter on an unread dialog deletes nothing
}

function confirmDelete(version) {
  const model = shownModel();
  const served = model && servedVersion(model)?.model_version === version.model_version;
  askToConfirm(`Delete ${version.tag}?`,
    `The version and its files are removed from the model store; this cannot be undone.${served
      ? ` It is the version ${version.model_name} serves: the name then serves the previous version, if any.` : ""}`,
    async () => {
      try {
        const answer = await api("DELETE", `v1/models/${encodeURIComponent(version.tag)}`);
        notify(`Deleted ${answer.deleted.join(", ")}.`);
        state.version = null;
      } catch (failure) {
        notify(`Could not delete ${version.tag}: ${failureText(failure)}`, true);
      }
      await refreshModels();
    });
}

// ---------------------------------------------------------------------------------- example set

async function loadExamples(model, cursor = null) {
  const name = model.model_name;
  const query = `limit=${EXAMPLES_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
  let page;
  try {
    page = await api("GET", `v1/models/${encodeURIComponent(name)}/examples?${query}`);
  } catch (failure) {
    if (failure.status !== 401) notify(`Could not list the examples of ${name}: ${failureText(failure)}`, true);
    return;
  }
  if (state.model !== name || !$("example-set")) return; // another model was chosen meanwhile
  const before = cursor && state.exampleSet?.model === name ? state.exampleSet.rows : [];
  state.exampleSet = { model: name, rows: [...before, ...page.examples], total: page.total, digest: page.digest,
    nextCursor: page.next_cursor };
  renderExamples(model);
}

/** What the served version was trained on, against the set as it is: "trained on N examples (+k since)". */
function trainedOnLine(model) {
  const set = state.exampleSet;
  const served = servedVersion(model);
  if (!served) return "No version is served: retrain to train one on this set.";
  if (served.examples_digest && served.examples_digest === set.digest) {
    return `The served version ${served.model_version} was trained on exactly this set of ${set.total} examples.`;
  }
  const since = set.rows.filter((example) => new Date(example.added_at) > new Date(served.created_at)).length;
  const trainedOn = served.num_examples ?? "?";
  return `The served version ${served.model_version} was trained on ${trainedOn} examples (+${since} added since`
    + `${set.nextCursor ? " among those shown" : ""}); the set now has ${set.total}. Retrain to learn from it.`;
}

function renderExamples(model) {
  const set = state.exampleSet;
  const target = state.target?.model === model.model_name ? state.target.id : null;
  const rows = set.rows.map((example) => el("tr", example.id === target
    ? { "data-example": example.id, class: "target", "aria-current": "true", tabindex: "-1" }
    : { "data-example": example.id },
    el("td", {}, example.text),
    el("td", {}, example.labels ? example.labels.join(", ") : (example.label ?? "(none of these)")),
    el("td", {}, example.source),
    el("td", {}, when(example.added_at)),
    el("td", {}, el("button", {
      type: "button", class: "danger", "aria-label": `Delete example: ${example.text}`,
      onclick: () => confirmDeleteExample(model, example),
    }, "Delete"))));
  $("example-set").replaceChildren(
    el("h3", { tabindex: "-1" }, "Example set"),
    el("p", { class: "facts-line", id: "trained-on" }, trainedOnLine(model)),
    addExampleForm(model),
    retrainForm(model),
    rows.length
      ? el("table", { class: "examples" },
        el("thead", {}, el("tr", {}, el("th", {}, "Text"), el("th", {}, "Label"), el("th", {}, "Source"),
          el("th", {}, "Added"), el("th", {}, el("span", { class: "visually-hidden" }, "Actions")))),
        el("tbody", {}, rows))
      : el("p", { class: "muted" }, "No examples kept for this model (trained before example sets existed): add some, then retrain."),
    set.nextCursor ? el("button", { type: "button", onclick: () => loadExamples(model, set.nextCursor) },
      `Show more examples (${set.rows.length} of ${set.total})`) : "");
  showTarget(model);
}

/** The example a link named: scrolled to and focused once its page is read (pages are read on until it is). */
function showTarget(model) {
  const target = state.target;
  if (!target || target.model !== model.model_name || target.found) return;
  const row = $("example-set").querySelector(`tr[data-example="${CSS.escape(target.id)}"]`);
  if (row) {
    target.found = true;
    row.scrollIntoView({ block: "center" });
    row.focus();
    notify(`The example “${row.cells[0].textContent}” is highlighted in the example set of ${model.model_name}.`);
  } else if (state.exampleSet.nextCursor && target.pages < MAX_TARGET_PAGES) {
    target.pages += 1;
    loadExamples(model, state.exampleSet.nextCursor);
  } else {
    target.found = true; // looked for: not asked again at each redraw
    notify(state.exampleSet.nextCursor
      ? `That example is not among the first ${state.exampleSet.rows.length} of the example set of ${model.model_name}.`
      : `That example is not in the example set of ${model.model_name} now (deleted since?).`, true);
  }
}

function addExampleForm(model) {
  const multiLabel = servedVersion(model)?.task === "multi_label";
  const text = el("input", { type: "text", id: "example-text", autocomplete: "off", required: "" });
  const label = el("input", { type: "text", id: "example-label", autocomplete: "off", spellcheck: "false" });
  const form = el("form", { class: "inline-form", id: "example-form", novalidate: "" },
    el("label", {}, "Text ", text),
    el("label", {}, multiLabel ? "Labels (comma-separated) " : "Label ", label),
    el("button", { type: "submit" }, "Add example"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    const example = multiLabel
      ? { text: text.value, labels: label.value.split(",").map((part) => part.trim()).filter(Boolean) }
      : { text: text.value, label: label.value.trim() || null };
    await busy(form, "Adding…", async () => {
      try {
        const answer = await api("POST", `v1/models/${encodeURIComponent(model.model_name)}/examples`,
          { examples: [example] });
        if (answer.conflicts.length) {
          const held = answer.conflicts[0].existing;
          notify(`Not added: the set has this text as ${held.labels ? held.labels.join(", ") : held.label}; `
            + "delete it first to relabel it.", true);
        } else if (answer.duplicates.length) {
          notify("Already in the set with that label: nothing added.");
        } else {
          notify(`Added: the set has ${answer.total} examples. Retrain to learn from it.`);
        }
      } catch (failure) {
        notify(`Could not add the example: ${failureText(failure)}`, true);
      }
      await loadExamples(model);
    });
  };
  return form;
}

function retrainForm(model) {
  const strategy = el("select", { id: "retrain-strategy" },
    el("option", { value: "head" }, "head: a new head on the served version's body (seconds)"),
    el("option", { value: "continue" }, "continue: fine-tune the served body further"),
    el("option", { value: "full" }, "full: fine-tune from the base model"),
    el("option", { value: "auto" }, "auto: head at once, then full, kept if better"));
  const ifBetter = el("input", { type: "checkbox", id: "retrain-if-better", checked: "" });
  const form = el("form", { class: "inline-form", id: "retrain-form", novalidate: "" },
    el("label", {}, "Retrain ", strategy),
    el("label", { class: "inline" }, ifBetter, " serve it only if it is no worse"),
    el("button", { type: "submit", class: "primary" }, "Retrain"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    await busy(form, "Queuing…", async () => {
      try {
        const job = await api("POST", `v1/models/${encodeURIComponent(model.model_name)}/retrain`,
          { strategy: strategy.value, promote: ifBetter.checked ? "if_better" : "always" });
        notify(`Retraining ${model.model_name}: job ${job.job_id} (see Jobs).`);
        await refreshJobs();
      } catch (failure) {
        notify(`Could not retrain: ${failureText(failure)}`, true);
      }
    });
  };
  return form;
}

function confirmDeleteExample(model, example) {
  askToConfirm("Delete this example?", `"${example.text}" leaves the example set of ${model.model_name}; versions `
    + "already trained on it keep it.", async () => {
    try {
      const answer = await api("DELETE",
        `v1/models/${encodeURIComponent(model.model_name)}/examples/${encodeURIComponent(example.id)}`);
      notify(`Deleted: the set has ${answer.total} examples.`);
    } catch (failure) {
      notify(`Could not delete the example: ${failureText(failure)}`, true);
    }
    await loadExamples(model);
  });
}

// ---------------------------------------------------------------------------------------- inbox
// What to label next (POST …/suggest), one card at a time, and suspect labels (GET …/suspects). Both
// answer through POST …/feedback, which puts the label in the example set. Keys on a card: 1–9 the
// label of that number, Enter or a the model's guess, n none of these, s skip; on a suspect: f fix
// (take the suggested label), k keep.

function inboxPanel(model) {
  const pool = el("textarea", { id: "inbox-pool", rows: "4", spellcheck: "false",
    placeholder: "Unlabelled texts, one per line (e.g. recent requests)" });
  const form = el("form", { class: "inline-form", id: "suggest-form", novalidate: "" },
    el("label", {}, "Texts to choose from ", pool),
    el("button", { type: "submit" }, "Suggest texts to label"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    const texts = pool.value.split("\n").map((text) => text.trim()).filter(Boolean);
    if (!texts.length) {
      notify("Paste unlabelled texts first, one per line.", true);
      return;
    }
    await busy(form, "Choosing…", async () => {
      try {
        const answer = await api("POST", `v1/models/${encodeURIComponent(model.model_name)}/suggest`,
          { texts, k: SUGGESTIONS });
        state.inbox = { model: model.model_name, cards: answer.suggestions, at: 0, labelled: 0 };
        renderCards(model);
      } catch (failure) {
        notify(`Could not suggest texts: ${failureText(failure)}`, true);
      }
    });
  };
  return [
    el("h3", {}, "Label next"),
    el("p", { class: "muted" }, "The texts the model is least sure of, no two alike, none already in the set. Keys: "
      + "1–9 a label, Enter the model's guess, n none of these, s skip."),
    form,
    el("div", { id: "cards" }),
    el("h3", {}, "Suspect labels"),
    el("p", { class: "muted" }, "Examples whose label a model trained without them disagrees with. Keys: f fix, k keep."),
    el("button", { type: "button", id: "find-suspects", onclick: () => loadSuspects(model) }, "Find suspect labels"),
    el("div", { id: "suspects" }),
  ];
}

function labelName(label) {
  return Array.isArray(label) ? (label.length ? label.join(", ") : "no label") : (label ?? "none of these");
}

/** Send a text's label as feedback; true when the set took it. */
async function giveFeedback(model, text, label) {
  const body = Array.isArray(label) ? { text, labels: label } : { text, label };
  try {
    const answer = await api("POST", `v1/models/${encodeURIComponent(model.model_name)}/feedback`, body);
    notify(`Labelled "${text}" as ${labelName(label)}${answer.replaced ? ` (was ${labelName(answer.replaced.labels
      ?? answer.replaced.label)})` : ""}: the set has ${answer.total} examples. Retrain to learn from it.`);
    loadExamples(model);
    return true;
  } catch (failure) {
    notify(`Could not label the text: ${failureText(failure)}`, true);
    return false;
  }
}

function renderCards(model) {
  const box = $("cards");
  const inbox = state.inbox;
  if (!box || !inbox || inbox.model !== model.model_name) return;
  if (inbox.at >= inbox.cards.length) {
    box.replaceChildren(el("p", { class: "facts-line", id: "inbox-done" }, `Done: ${inbox.labelled} of `
      + `${inbox.cards.length} texts labelled. Retrain to learn from them.`));
    return;
  }
  const card = inbox.cards[inbox.at];
  const multiLabel = Array.isArray(card.labels);
  const guess = multiLabel ? card.labels : card.label;
  const labels = servedVersion(model)?.labels ?? [];
  const answer = async (label) => {
    if (await giveFeedback(model, card.text, label)) {
      inbox.labelled += 1;
      inbox.at += 1;
      renderCards(model);
    }
  };
  const skip = () => {
    inbox.at += 1;
    renderCards(model);
  };
  const element = el("div", { class: "card", id: "inbox-card", tabindex: "0",
    "aria-label": `Text ${inbox.at + 1} of ${inbox.cards.length} to label` },
    el("p", { class: "muted" }, `${inbox.at + 1} of ${inbox.cards.length} · ${card.reason.replace("_", " ")}, `
      + `uncertainty ${fixed(card.score, 2)}`),
    el("p", { class: "card-text" }, card.text),
    el("div", { class: "card-actions" },
      el("button", { type: "button", class: "primary", onclick: () => answer(guess) }, `Enter: ${labelName(guess)}`),
      ...labels.map((label, index) => el("button", { type: "button", "data-label": label,
        onclick: () => answer(multiLabel ? [label] : label) }, index < 9 ? `${index + 1}: ${label}` : label)),
      el("button", { type: "button", onclick: () => answer(multiLabel ? [] : null) }, "n: none of these"),
      el("button", { type: "button", onclick: skip }, "s: skip")));
  element.addEventListener("keydown", (event) => {
    if (event.target !== element || event.ctrlKey || event.metaKey || event.altKey) return;
    const number = Number.parseInt(event.key, 10);
    if (number >= 1 && number <= Math.min(9, labels.length)) answer(multiLabel ? [labels[number - 1]] : labels[number - 1]);
    else if (event.key === "Enter" || event.key === "a") answer(guess);
    else if (event.key === "n") answer(multiLabel ? [] : null);
    else if (event.key === "s") skip();
    else return;
    event.preventDefault();
  });
  box.replaceChildren(element);
  element.focus();
}

async function loadSuspects(model) {
  const button = $("find-suspects");
  button.disabled = true;
  try {
    const answer = await api("GET", `v1/models/${encodeURIComponent(model.model_name)}/suspects?limit=${SUSPECTS}`);
    state.suspects = { model: model.model_name, rows: answer.suspects, thin: answer.thin_labels };
    renderSuspects(model);
  } catch (failure) {
    notify(`Could not audit the labels: ${failureText(failure)}`, true);
  } finally {
    button.disabled = false;
  }
}

function renderSuspects(model) {
  const box = $("suspects");
  const found = state.suspects;
  if (!box || !found || found.model !== model.model_name) return;
  const drop = (suspect) => {
    found.rows = found.rows.filter((row) => row !== suspect);
    renderSuspects(model);
    box.querySelector("li.suspect")?.focus();
  };
  const items = found.rows.map((suspect) => {
    const given = suspect.labels ?? suspect.label;
    const suggested = suspect.suggested_labels ?? suspect.suggested_label;
    const fix = async () => {
      if (await giveFeedback(model, suspect.text, suggested)) drop(suspect);
    };
    const item = el("li", { class: "suspect", tabindex: "0", "data-example": suspect.id },
      el("span", { class: "card-text" }, suspect.text),
      el("span", { class: "muted" }, ` labelled ${labelName(given)}; `
        + (suspect.reason === "near_duplicate" ? "a near-duplicate is labelled " : "looks like ")
        + `${labelName(suggested)} (${fixed(suspect.score, 2)}) `),
      el("button", { type: "button", onclick: fix }, `Fix: ${labelName(suggested)}`),
      el("button", { type: "button", onclick: () => drop(suspect) }, "Keep"));
    item.addEventListener("keydown", (event) => {
      if (event.target !== item) return;
      if (event.key === "f") fix();
      else if (event.key === "k") drop(suspect);
      else return;
      event.preventDefault();
    });
    return item;
  });
  box.replaceChildren(
    items.length ? el("ol", { class: "suspects" }, ...items)
      : el("p", { class: "facts-line", id: "no-suspects" }, "No suspect labels left."),
    found.thin.length ? el("p", { class: "muted" }, "Too few examples to audit: " + found.thin.map((thin) =>
      `${thin.label} (${thin.examples} of ${thin.needed})`).join(", ")) : "");
}

// ---------------------------------------------------------------------------------------- jobs

async function refreshJobs() {
  let page;
  try {
    page = await api("GET", `v1/jobs?limit=${JOBS_PAGE}`);
  } catch (failure) {
    if (failure.status !== 401) notify(`Could not list the jobs: ${failureText(failure)}`, true);
    return;
  }
  state.jobs = page.jobs;
  if (!state.olderJobs.length) state.olderCursor = page.next_cursor;
  renderJobs();
}

async function showOlderJobs() {
  try {
    const page = await api("GET", `v1/jobs?limit=${JOBS_PAGE}&cursor=${encodeURIComponent(state.olderCursor)}`);
    state.olderJobs.push(...page.jobs);
    state.olderCursor = page.next_cursor;
  } catch (failure) {
    notify(`Could not list older jobs: ${failureText(failure)}`, true);
  }
  renderJobs();
}

/** The jobs on screen: the first page, then the older pages fetched (a job that moved is shown once). */
function shownJobs() {
  const first = new Set(state.jobs.map((job) => job.job_id));
  return [...state.jobs, ...state.olderJobs.filter((job) => !first.has(job.job_id))];
}

function progressCell(job) {
  if (job.status === "pending") return el("span", { class: "muted" }, "queued");
  if (job.status === "completed") return el("progress", { max: "1", value: "1", "aria-label": "done" });
  if (job.status !== "running") return el("span", { class: "muted" }, "—");
  const steps = job.total_steps ? ` · step ${job.step ?? 0} of ${job.total_steps}` : "";
  const bar = job.progress === null || job.progress === undefined
    ? el("progress", { "aria-label": "running" }) // indeterminate: no step count yet
    : el("progress", { max: "1", value: String(job.progress), "aria-label": `${percent(job.progress)} done` });
  return el("span", {}, bar, " ", job.progress === null || job.progress === undefined ? "" : percent(job.progress), steps);
}

function jobRow(job) {
  const cancellable = ACTIVE.has(job.status) && !job.cancel_requested;
  const outcome = job.status === "completed" && job.model_version
    ? el("button", {
      type: "button", class: "link",
      onclick: () => {
        state.model = job.model_name;
        state.version = job.model_version;
        location.hash = "#models";
        refreshModels();
      },
    }, `version ${job.model_version}`)
    : job.error || job.note || (job.cancel_requested && job.status === "running" ? "cancelling…" : "");
  return el("tr", { "data-job-id": job.job_id, class: job.job_id === state.newJob ? "new" : "" },
    el("td", { title: job.job_id }, el("code", {}, job.job_id.slice(0, 8))),
    el("td", {}, job.kind),
    el("td", {}, job.model_name),
    el("td", {}, el("span", { class: `badge status ${job.status}` }, job.status)),
    el("td", { class: "progress" }, progressCell(job)),
    el("td", {}, when(job.created_at)),
    el("td", { class: job.status === "failed" ? "error-text" : "" }, outcome,
      job.warnings?.length ? el("div", { class: "muted" }, job.warnings.join(" ")) : null),
    el("td", {}, cancellable ? el("button", {
      type: "button", class: "danger", "aria-label": `Cancel job ${job.job_id}`, onclick: () => cancelJob(job),
    }, "Cancel") : null));
}

function renderJobs() {
  const jobs = shownJobs();
  $("job-table").tBodies[0].replaceChildren(...jobs.map(jobRow));
  $("jobs-empty").hidden = jobs.length > 0;
  $("jobs-older").hidden = !state.olderCursor;
}

function updateJob(job) {
  const before = shownJobs().find((known) => known.job_id === job.job_id) || null;
  const replace = (jobs) => jobs.map((known) => (known.job_id === job.job_id ? job : known));
  state.jobs = replace(state.jobs);
  state.olderJobs = replace(state.olderJobs);
  if (!before) state.jobs.unshift(job);
  renderJobs();
  if (before && before.status !== "completed" && job.status === "completed") {
    notify(`${job.model_name}: version ${job.model_version} is trained and served.`);
    refreshModels();
  }
}

async function cancelJob(job) {
  try {
    updateJob(await api("POST", `v1/jobs/${encodeURIComponent(job.job_id)}/cancel`));
  } catch (failure) {
    notify(`Could not cancel job ${job.job_id}: ${failureText(failure)}`, true);
  }
}

/** While jobs are pending or running, each is polled at its own route; the list now and then. */
async function pollJobs() {
  const active = shownJobs().filter((job) => ACTIVE.has(job.status)).slice(0, MAX_POLLED_JOBS);
  for (const job of active) {
    try {
      updateJob(await api("GET", `v1/jobs/${encodeURIComponent(job.job_id)}`));
    } catch (failure) {
      if (failure.status === 404) { // expired (JOB_RETENTION_DAYS): gone from the list too
        state.jobs = state.jobs.filter((known) => known.job_id !== job.job_id);
        state.olderJobs = state.olderJobs.filter((known) => known.job_id !== job.job_id);
      }
    }
  }
  const now = Date.now();
  if (currentScreen() === "jobs" && now - state.jobsListedAt > POLL_LIST_MS) {
    state.jobsListedAt = now;
    await refreshJobs();
  }
  setTimeout(pollJobs, POLL_ACTIVE_MS);
}

// ---------------------------------------------------------------------------------------- batches
// Files and batches as OpenAI's Batch API: a file is uploaded (POST /v1/files), a batch runs it
// (POST /v1/batches) in the batch workers, and its results become files. The list is polled every
// POLL_BATCHES_MS while the screen is open and a batch is unfinished; it stops when none is.

function shownBatches() {
  const first = new Set(state.batches.map((batch) => batch.id));
  return [...state.batches, ...state.olderBatches.filter((batch) => !first.has(batch.id))];
}

function stopPollingBatches() {
  clearTimeout(state.batchTimer);
  state.batchTimer = null;
}

function pollBatchesIfUnfinished() {
  stopPollingBatches();
  if (currentScreen() === "batches" && shownBatches().some((batch) => UNFINISHED_BATCH.has(batch.status))) {
    state.batchTimer = setTimeout(refreshBatches, POLL_BATCHES_MS);
  }
}

function shortBatchId(id) {
  return id.replace(/^batch_/, "").slice(0, 8);
}

/** The first page again, and each unfinished batch of the older pages at its own route. */
async function refreshBatches() {
  stopPollingBatches();
  const before = new Map(shownBatches().map((batch) => [batch.id, batch.status]));
  try {
    const page = await api("GET", `v1/batches?limit=${BATCHES_PAGE}`);
    // A batch created while this page was on its way is kept (it is newer than the page's first).
    const listed = new Set(page.data.map((batch) => batch.id));
    const newer = state.batches.filter((batch) => !listed.has(batch.id)
      && (!page.data.length || batch.created_at >= page.data[0].created_at));
    state.batches = [...newer, ...page.data];
    if (!state.olderBatches.length) state.moreBatches = page.has_more;
    const first = new Set(state.batches.map((batch) => batch.id));
    const older = [];
    for (const batch of state.olderBatches) {
      if (first.has(batch.id) || !UNFINISHED_BATCH.has(batch.status)) {
        older.push(batch);
        continue;
      }
      try {
        older.push(await api("GET", `v1/batches/${encodeURIComponent(batch.id)}`));
      } catch (failure) {
        if (failure.status !== 404) older.push(batch); // 404: deleted with its files (BATCH_FILE_DAYS)
      }
    }
    state.olderBatches = older;
  } catch (failure) {
    if (failure.status === 401) return; // the key is asked for: start() lists them again
    notify(`Could not list the batches: ${failureText(failure)}`, true);
  }
  renderBatches();
  for (const batch of shownBatches()) {
    const was = before.get(batch.id);
    if (was && UNFINISHED_BATCH.has(was) && !UNFINISHED_BATCH.has(batch.status)) {
      const counts = batch.request_counts;
      notify(`Batch ${shortBatchId(batch.id)} ${batch.status}: ${counts.completed} of ${counts.total} requests `
        + `completed${counts.failed ? `, ${counts.failed} failed` : ""}.`, batch.status === "failed");
    }
  }
  pollBatchesIfUnfinished();
}

async function showOlderBatches() {
  const shown = shownBatches();
  try {
    const after = shown[shown.length - 1].id;
    const page = await api("GET", `v1/batches?limit=${BATCHES_PAGE}&after=${encodeURIComponent(after)}`);
    state.olderBatches.push(...page.data);
    state.moreBatches = page.has_more;
  } catch (failure) {
    notify(`Could not list older batches: ${failureText(failure)}`, true);
  }
  renderBatches();
  pollBatchesIfUnfinished();
}

/** "42 s", "3 min 5 s", "2 h 10 min": an ETA. */
function duration(seconds) {
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

function batchProgressCell(batch) {
  const progress = batch.progress;
  if (progress.texts_total === null || progress.texts_total === undefined) {
    if (batch.status === "validating") {
      return el("span", {}, el("progress", { "aria-label": "validating" }), " ", el("span", { class: "muted" }, "reading the file"));
    }
    return el("span", { class: "muted" }, "—");
  }
  const total = progress.texts_total;
  const done = Math.min(progress.texts_done, total);
  const bar = total > 0
    ? el("progress", { max: String(total), value: String(done), "aria-label": `${done} of ${total} texts done` })
    : null;
  const running = batch.status === "in_progress";
  const rate = running && progress.texts_per_second ? `${progress.texts_per_second} texts/s` : null;
  const eta = running && progress.eta_seconds !== null && progress.eta_seconds !== undefined
    ? `about ${duration(progress.eta_seconds)} left` : null;
  const shards = running && progress.shards_total > 1 ? `shard ${progress.shards_done} of ${progress.shards_total}` : null;
  return el("span", {}, bar, " ", el("span", { class: "texts" }, `${done} / ${total} texts`),
    rate || eta || shards ? el("div", { class: "muted rate" }, [rate, eta, shards].filter(Boolean).join(" · ")) : null);
}

function batchCounts(batch) {
  const counts = batch.request_counts;
  return el("span", {},
    el("span", { "data-count": "completed" }, counts.completed), " completed · ",
    el("span", { "data-count": "failed", class: counts.failed ? "bad" : "" }, counts.failed), " failed · ",
    el("span", { "data-count": "total" }, counts.total), " in all");
}

function inputCell(batch) {
  const file = state.files.get(batch.input_file_id);
  return el("span", { title: batch.input_file_id },
    file ? file.filename : el("code", {}, batch.input_file_id.replace(/^file-/, "").slice(0, 8)),
    " ", el("span", { class: "muted" }, `(${batch.input_format === "openai" ? "OpenAI lines" : batch.input_format})`));
}

function modelCell(batch) {
  if (batch.model_name) {
    const name = batch.model_name.split(":")[0];
    const pinned = batch.model_versions[name];
    return el("span", {}, batch.model_name, pinned && !batch.model_name.includes(":")
      ? el("span", { class: "muted", title: "the version served when the batch was planned" }, ` (${pinned})`) : null);
  }
  const pinned = Object.entries(batch.model_versions).map(([name, version]) => `${name}:${version}`);
  return pinned.length ? pinned.join(", ") : el("span", { class: "muted" }, "named by each line");
}

function batchOutcome(batch) {
  const parts = [];
  for (const error of batch.errors?.data ?? []) {
    parts.push(el("div", { class: "batch-error" }, `${error.code}: ${error.message}`
      + (error.line !== null && error.line !== undefined ? ` (line ${error.line})` : "")));
  }
  if (batch.status === "cancelling") parts.push(el("div", { class: "muted" }, "cancelling…"));
  if (batch.status === "expired") parts.push(el("div", { class: "muted" }, "past its completion window: what it finished is in its files"));
  const links = [];
  if (batch.output_file_id) {
    links.push(el("button", { type: "button", class: "link", "data-file": batch.output_file_id,
      onclick: (event) => downloadFile(batch.output_file_id, event.currentTarget) }, "Download results"));
  }
  if (batch.error_file_id) {
    links.push(el("button", { type: "button", class: "link", "data-file": batch.error_file_id,
      onclick: (event) => downloadFile(batch.error_file_id, event.currentTarget) }, "Download errors"));
  }
  if (links.length) parts.push(el("div", { class: "actions" }, links));
  return parts;
}

function batchRow(batch) {
  // The batch just submitted stays marked; it flashes only at first (the rows are drawn again at each poll).
  const submitted = batch.id === state.newBatch?.id;
  const flash = submitted && Date.now() - state.newBatch.at < FLASH_MS;
  return el("tr", { "data-batch-id": batch.id, class: submitted ? `submitted${flash ? " new" : ""}` : "" },
    el("td", { title: batch.id }, el("code", {}, shortBatchId(batch.id))),
    el("td", {}, inputCell(batch)),
    el("td", {}, modelCell(batch), el("div", { class: "muted" }, batch.endpoint)),
    el("td", {}, el("span", { class: `badge status ${batch.status}` }, batch.status)),
    el("td", { class: "progress" }, batchProgressCell(batch)),
    el("td", { class: "counts" }, batchCounts(batch)),
    el("td", {}, when(batch.created_at * 1000)),
    el("td", { class: batch.errors ? "outcome error-text" : "outcome" }, batchOutcome(batch)),
    el("td", {}, CANCELLABLE_BATCH.has(batch.status) ? el("button", {
      type: "button", class: "danger", "aria-label": `Cancel batch ${batch.id}`, onclick: () => cancelBatch(batch),
    }, "Cancel") : null));
}

function renderBatches() {
  const batches = shownBatches();
  $("batch-table").tBodies[0].replaceChildren(...batches.map(batchRow));
  $("batches-empty").hidden = batches.length > 0;
  $("batches-older").hidden = !state.moreBatches || !batches.length;
  loadInputFiles(batches);
}

/** The input files' names, each asked once (GET /v1/files/{id}); the list is drawn again with them. */
async function loadInputFiles(batches) {
  const wanted = [...new Set(batches.map((batch) => batch.input_file_id))].filter((id) => !state.files.has(id));
  if (!wanted.length) return;
  for (const id of wanted) state.files.set(id, null);
  const found = await Promise.all(wanted.map((id) => api("GET", `v1/files/${encodeURIComponent(id)}`).catch(() => null)));
  found.forEach((file, index) => state.files.set(wanted[index], file));
  if (found.some(Boolean)) $("batch-table").tBodies[0].replaceChildren(...shownBatches().map(batchRow));
}

function updateBatch(batch) {
  const replace = (batches) => batches.map((known) => (known.id === batch.id ? batch : known));
  const known = shownBatches().some((shown) => shown.id === batch.id);
  state.batches = replace(state.batches);
  state.olderBatches = replace(state.olderBatches);
  if (!known) state.batches.unshift(batch);
  renderBatches();
  pollBatchesIfUnfinished();
}

async function cancelBatch(batch) {
  try {
    updateBatch(await api("POST", `v1/batches/${encodeURIComponent(batch.id)}/cancel`));
  } catch (failure) {
    notify(`Could not cancel batch ${batch.id}: ${failureText(failure)}`, true);
    await refreshBatches();
  }
}

/** A file's bytes, fetched with the key (a plain link could not send it), saved under the file's name. */
async function downloadFile(fileId, button) {
  button.disabled = true;
  try {
    const file = await api("GET", `v1/files/${encodeURIComponent(fileId)}`);
    const response = await request("GET", `v1/files/${encodeURIComponent(fileId)}/content`);
    if (!response.ok) throw refusal(response, await response.text());
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: file.filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000); // the download has read it by then
  } catch (failure) {
    notify(`Could not download ${fileId}: ${failureText(failure)}`, true);
  } finally {
    button.disabled = false;
  }
}

function fillBatchModels() {
  const select = $("batch-model");
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "none: OpenAI request lines (each line names its model)"),
    ...state.models.map((model) => el("optgroup", { label: model.model_name },
      el("option", { value: model.model_name }, `${model.model_name} (served version)`),
      model.versions.map((version) => el("option", { value: version.tag }, version.tag)))));
  if ([...select.options].some((option) => option.value === chosen) && (chosen || select.dataset.chosen)) {
    select.value = chosen;
  } else if (state.models.length) {
    select.value = state.models[0].model_name; // a table's model: the usual case
  }
}

const TABLE_SUFFIXES = ["csv", "parquet"]; // always tables; .jsonl may be either kind

async function runBatch(event) {
  event.preventDefault();
  const error = $("batch-error");
  error.textContent = "";
  const file = $("batch-file").files[0];
  const model = $("batch-model").value;
  if (!file) {
    error.textContent = "Choose a file: a CSV, JSONL or Parquet table of texts, or OpenAI request lines (JSONL).";
    return;
  }
  const suffix = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  if (!model && TABLE_SUFFIXES.includes(suffix)) {
    error.textContent = `${file.name} is a table of texts: choose the model that answers its rows.`;
    return;
  }
  await busy(event.target, "Sending…", async () => {
    let uploaded;
    try {
      const form = new FormData();
      form.append("purpose", "batch");
      form.append("file", file, file.name);
      uploaded = await api("POST", "v1/files", form);
      state.files.set(uploaded.id, uploaded);
    } catch (failure) {
      error.textContent = `Could not upload ${file.name}: ${failureText(failure)}`;
      return;
    }
    const body = { input_file_id: uploaded.id, endpoint: $("batch-endpoint").value };
    if (model) body.model_name = model;
    try {
      const batch = await api("POST", "v1/batches", body);
      state.newBatch = { id: batch.id, at: Date.now() };
      $("batch-file").value = "";
      notify(`Batch ${shortBatchId(batch.id)} of ${uploaded.filename} is ${batch.status}.`);
      updateBatch(batch);
    } catch (failure) {
      error.textContent = `Uploaded ${uploaded.filename} as ${uploaded.id}, but the batch was refused: ${failureText(failure)}`;
    }
  });
}

// ---------------------------------------------------------------------------------------- try it

function fillTryModels() {
  const select = $("try-model");
  const chosen = select.value;
  select.replaceChildren(...state.models.map((model) => el("optgroup", { label: model.model_name },
    el("option", { value: model.model_name }, `${model.model_name} (served version)`),
    model.versions.map((version) => el("option", { value: version.tag }, version.tag)))));
  if (chosen && [...select.options].some((option) => option.value === chosen)) select.value = chosen;
  fillBatchModels();
}

async function predict(event) {
  event.preventDefault();
  const error = $("try-error");
  error.textContent = "";
  const texts = $("try-texts").value.split("\n").map((text) => text.trim()).filter(Boolean);
  if (!$("try-model").value) {
    error.textContent = "No model to ask: train one first.";
    return;
  }
  if (!texts.length) {
    error.textContent = "Type at least one text.";
    return;
  }
  const body = { model_name: $("try-model").value, texts };
  const topK = $("try-top-k").value.trim();
  if (topK) body.top_k = Number(topK);
  if ($("try-abstain").checked) body.abstain = true;
  const asked = { model_name: body.model_name, abstain: body.abstain }; // what "Why?" asks again
  await busy(event.target, "Predicting…", async () => {
    try {
      const answer = await api("POST", "v1/predict", body);
      $("try-results").replaceChildren(...answer.predictions.map((prediction) => predictionCard(prediction, asked)));
    } catch (failure) {
      error.textContent = failureText(failure);
      $("try-results").replaceChildren();
    }
  });
}

/** Runs `work` with the form's submit button disabled and saying what is happening (a model's
 * first prediction loads it: seconds). */
async function busy(form, saying, work) {
  const button = form.querySelector("button[type=submit]");
  const label = button.textContent;
  button.disabled = true;
  button.textContent = saying;
  form.setAttribute("aria-busy", "true");
  try {
    await work();
  } finally {
    button.disabled = false;
    button.textContent = label;
    form.removeAttribute("aria-busy");
  }
}

const ABSTAINED_BECAUSE = {
  out_of_scope: "far from every training example",
  none_of_these: "like the none-of-these examples",
  low_confidence: "top probability under the threshold",
};

function answerOf(prediction) {
  return prediction.labels
    ? (prediction.labels.length ? prediction.labels.join(", ") : "no label over its threshold")
    : prediction.label === null ? `none of these (${ABSTAINED_BECAUSE[prediction.reason] || "abstained"})`
    : prediction.label;
}

function predictionCard(prediction, asked) {
  const scores = prediction.scores || [{ label: prediction.label, score: prediction.score }];
  state.cards += 1;
  const textId = `prediction-text-${state.cards}`;
  const box = el("div", { class: "explanation", id: `explanation-${state.cards}`, hidden: true });
  const why = el("button", { type: "button", class: "why", "aria-expanded": "false", "aria-controls": box.id,
    "aria-describedby": textId }, "Why?");
  why.addEventListener("click", () => toggleExplanation(prediction.text, asked, why, box));
  return el("div", { class: "prediction panel" },
    el("div", { class: "text", id: textId }, `“${prediction.text}”`),
    el("div", { class: "answer" }, "answer: ", el("b", { class: "label" }, answerOf(prediction)), " ", why),
    el("table", { class: "scores" }, el("tbody", {}, scores.map((entry) => el("tr", { "data-label": entry.label ?? "" },
      el("th", { scope: "row" }, entry.label ?? "(none of these)"),
      el("td", {}, meter(entry.score, "", `${entry.label} probability`)))))),
    box);
}

// ---------------------------------------------------------------------------------- explanations
// "Why?" on a prediction: POST /v1/explain (method both) for its text, with the model and abstain it was
// predicted with. Its words are highlighted by their weight (how much the explained label's probability
// falls without each), and its nearest training examples link to their rows in the model's example set.

/** Shows the text's explanation (asked once), or hides it again. */
async function toggleExplanation(text, asked, button, box) {
  if (button.getAttribute("aria-expanded") === "true") {
    button.setAttribute("aria-expanded", "false");
    box.hidden = true;
    return;
  }
  if (box.getAttribute("aria-busy")) return; // asked already: its answer is on its way
  if (!box.dataset.explained) {
    button.textContent = "Explaining…"; // not disabled: a disabled button would lose the keyboard's focus
    box.setAttribute("aria-busy", "true");
    try {
      const body = { model_name: asked.model_name, texts: [text], method: "both", top_k: NEAREST };
      if (asked.abstain) body.abstain = true;
      const answer = await api("POST", "v1/explain", body);
      box.replaceChildren(...explanationView(answer.explanations[0], answer.model_version));
      box.dataset.explained = "yes";
    } catch (failure) {
      box.replaceChildren(el("div", { class: "error-box", role: "alert" },
        `Could not explain this answer: ${failureText(failure)}`));
    } finally {
      button.textContent = "Why?";
      box.removeAttribute("aria-busy");
    }
  }
  box.hidden = false;
  button.setAttribute("aria-expanded", "true");
}

/** "+0.412", "−0.012": a weight with its sign. */
function signed(value, digits = 3) {
  return `${value > 0 ? "+" : value < 0 ? "−" : "±"}${Math.abs(value).toFixed(digits)}`;
}

function explanationView(explanation, tag) {
  const label = explanation.label;
  const answered = explanation.prediction.labels ?? explanation.prediction.label;
  const other = Array.isArray(answered) ? !answered.includes(label) : answered !== label;
  const unit = explanation.granularity === "sentence" ? "sentence" : "word";
  return [
    el("p", { class: "facts-line explained", "data-label": label, "data-score": explanation.score },
      el("span", {}, "why ", el("b", { class: "label" }, label)),
      el("span", {}, "probability ", el("b", { class: "score" }, fixed(explanation.score))),
      other ? el("span", {}, "its most probable label; the answer was ", el("b", {}, answerOf(explanation.prediction)))
        : null,
      explanation.granularity === "sentence"
        ? el("span", { class: "granularity" }, "by sentence: the text has more words than are weighed one at a time")
        : null),
    ...(explanation.spans ? weightedText(explanation, unit) : []),
    ...(explanation.nearest ? nearestExamples(explanation.nearest, tag.split(":")[0], "Nearest training examples",
      "nearest") : []),
    // a wrong label that taught the answer shows here: the mislabelled text is the nearest of its label
    ...(explanation.support?.length ? nearestExamples(explanation.support, tag.split(":")[0],
      `Nearest examples labelled ${label}: what taught it this answer`, "support") : []),
  ];
}

/** The text with each span highlighted by its weight: the stronger, the darker (the largest of the text's
 * weights darkest); a span that pulled away from the label is underlined, dashed. Each span's weight is in
 * its title and its data-weight; the strongest are written out below, for every reader. */
function weightedText(explanation, unit) {
  const characters = Array.from(explanation.text); // the API counts code points, as Array.from does
  const spans = explanation.spans;
  const strongest = Math.max(0.05, ...spans.map((span) => Math.abs(span.weight))); // noise stays pale
  const parts = [];
  let at = 0;
  for (const span of spans) {
    if (span.start > at) parts.push(characters.slice(at, span.start).join(""));
    const share = Math.min(1, Math.abs(span.weight) / strongest);
    const direction = span.weight > 0 ? "up" : span.weight < 0 ? "down" : "";
    const node = el("span", {
      class: `span ${direction}`.trim(), "data-weight": span.weight, "data-rank": span.rank,
      "data-start": span.start, "data-end": span.end,
      title: `${span.text}: ${signed(span.weight)} (the probability of ${explanation.label} `
        + `${span.weight < 0 ? "rises" : "falls"} by ${Math.abs(span.weight).toFixed(3)} without it; `
        + `rank ${span.rank} of ${spans.length})`,
    }, characters.slice(span.start, span.end).join(""));
    // Colours set through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    if (span.weight > 0) node.style.backgroundColor = `rgba(242, 169, 0, ${(0.85 * share).toFixed(3)})`;
    if (span.weight < 0) node.style.textDecorationColor = `rgba(179, 38, 30, ${(0.3 + 0.7 * share).toFixed(3)})`;
    parts.push(node);
    at = span.end;
  }
  if (at < characters.length) parts.push(characters.slice(at).join(""));
  const listed = (chosen) => chosen.slice(0, 3).flatMap((span, index) => [index ? ", " : "", el("b", {}, span.text),
    ` ${signed(span.weight)}`]);
  // in the API's rank order: its second round finds words that carry the answer together
  const carried = spans.filter((span) => span.weight >= 0.001).sort((a, b) => a.rank - b.rank);
  const pulled = spans.filter((span) => span.weight <= -0.001).sort((a, b) => a.weight - b.weight);
  return [
    el("p", { class: "weighted-text" }, parts),
    el("p", { class: "weights" },
      carried.length ? ["carried it: ", ...listed(carried)] : `no ${unit} carried it by more than 0.001`,
      pulled.length ? [" · pulled away: ", ...listed(pulled)] : null),
    el("p", { class: "legend" }, `Highlighted: how much the probability of ${explanation.label} falls without each `
      + `${unit} (darker: more); underlined, dashed: it rises without it. Hover a ${unit} for its weight.`),
  ];
}

function nearestExamples(nearest, modelName, title, kind) {
  if (!nearest.length) return [el("p", { class: "muted" }, "No training examples to compare with (an imported version).")];
  const rows = nearest.map((near) => el("tr", { "data-example": near.example_id ?? "" },
    el("td", { class: "near-text" }, near.text),
    el("td", {}, near.labels ? (near.labels.join(", ") || "no label") : (near.label ?? "(none of these)")),
    el("td", {}, meter(near.similarity, "similarity", "similarity")),
    el("td", {}, near.example_id
      ? el("a", { href: exampleLink(modelName, near.example_id), "aria-label": `Show in the example set: ${near.text}` },
        "Show in the example set")
      : el("span", { class: "muted" }, "no longer in the set"))));
  return [
    el("h4", {}, title),
    el("table", { class: `near-examples ${kind}` },
      el("thead", {}, el("tr", {}, el("th", {}, "Text"), el("th", {}, "Label"), el("th", {}, "Similarity"),
        el("th", {}, el("span", { class: "visually-hidden" }, "Link")))),
      el("tbody", {}, rows)),
  ];
}

// ---------------------------------------------------------------------------------------- train

/** RFC 4180 CSV: quoted fields may hold commas, quotes ("") and line breaks. Rows of fields, or
 * throws with the row where a quote is left open. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  let i = 0;
  if (text.charCodeAt(0) === 0xfeff) i = 1; // a byte-order mark, as spreadsheet programs write
  for (; i < text.length; i++) {
    const char = text[i];
    if (quoted) {
      if (char === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (char === '"') quoted = false;
      else field += char;
    } else if (char === '"' && field === "") quoted = true;
    else if (char === ",") {
      row.push(field);
      field = "";
    } else if (char === "\n" || char === "\r") {
      if (char === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += char;
  }
  if (quoted) throw new Error(`row ${rows.length + 1}: a quoted field is not closed (a " is missing)`);
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((fields) => fields.length > 1 || fields[0].trim() !== "");
}

/** The file's examples, or every problem found, each naming the row (the header is row 1). */
function examplesFromCsv(text) {
  let rows;
  try {
    rows = parseCsv(text);
  } catch (failure) {
    return { problems: [failure.message] };
  }
  if (!rows.length) return { problems: ["the file is empty: it needs a header row text,label and one row per example"] };
  const header = rows[0].map((name) => name.trim().toLowerCase());
  const missing = ["text", "label"].filter((name) => !header.includes(name));
  if (missing.length) {
    return {
      problems: [`missing column${missing.length > 1 ? "s" : ""} ${missing.map((name) => `"${name}"`).join(" and ")}: `
        + `the header row is "${rows[0].join(",")}"; the first row must name the columns text and label`],
    };
  }
  const textColumn = header.indexOf("text");
  const labelColumn = header.indexOf("label");
  const problems = [];
  const examples = [];
  rows.slice(1).forEach((fields, index) => {
    const rowNumber = index + 2;
    const text = (fields[textColumn] ?? "").trim();
    const label = (fields[labelColumn] ?? "").trim();
    if (!text) problems.push(`row ${rowNumber}: empty text`);
    if (!label) problems.push(`row ${rowNumber}: empty label`);
    if (text && label) examples.push({ text, label });
  });
  if (!problems.length && !examples.length) problems.push("no examples: the file has a header row and nothing under it");
  const counts = new Map();
  for (const example of examples) counts.set(example.label, (counts.get(example.label) || 0) + 1);
  if (!problems.length && counts.size < 2) {
    problems.push(`only one label ("${[...counts.keys()][0]}") in ${examples.length} examples: a classifier needs `
      + "examples of at least two labels");
  }
  if (problems.length > MAX_ROW_ERRORS) {
    const more = problems.length - MAX_ROW_ERRORS;
    problems.splice(MAX_ROW_ERRORS, more, `… and ${more} more`);
  }
  return problems.length ? { problems } : { examples, counts };
}

function modelNameFromFile(fileName) {
  return fileName.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^-._a-z0-9]+/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "").slice(0, 63);
}

async function readTrainingFile() {
  const file = $("train-file").files[0];
  state.examples = null;
  $("train-error").textContent = "";
  $("train-summary").textContent = "";
  if (!file) return;
  const parsed = examplesFromCsv(await file.text());
  if (parsed.problems) {
    $("train-error").textContent = `${file.name}:\n${parsed.problems.join("\n")}`;
    return;
  }
  state.examples = parsed.examples;
  const labels = [...parsed.counts.entries()].map(([label, count]) => `${label} (${count})`).join(", ");
  $("train-summary").textContent = `${parsed.examples.length} examples, ${parsed.counts.size} labels: ${labels}`;
  if (!$("train-name").value.trim()) $("train-name").value = modelNameFromFile(file.name);
}

async function train(event) {
  event.preventDefault();
  const error = $("train-error");
  if (!$("train-file").files[0]) {
    error.textContent = "Choose a CSV file of examples (columns text and label).";
    return;
  }
  if (!state.examples) return; // the file's problems are on screen already
  const body = { model_name: $("train-name").value.trim(), examples: state.examples, strategy: $("train-strategy").value };
  const base = $("train-base").value.trim();
  if (base) body.base_model = base;
  const iterations = $("train-iterations").value.trim();
  if (iterations) body.num_iterations = Number(iterations);
  error.textContent = "";
  await busy(event.target, "Sending…", async () => {
    try {
      const accepted = await api("POST", "v1/train", body);
      state.newJob = accepted.job_id;
      notify(`Training ${accepted.model_name}: job ${accepted.job_id} is ${accepted.status}.`
        + (accepted.warnings.length ? ` ${accepted.warnings.join(" ")}` : ""));
      updateJob(accepted);
      location.hash = "#jobs";
    } catch (failure) {
      error.textContent = failureText(failure); // the API's message names the field and the rule
    }
  });
}

// ---------------------------------------------------------------------------------------- start

async function start() {
  if (await refreshModels()) {
    clearNotice();
    await refreshJobs();
    if (currentScreen() === "batches") await refreshBatches();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpKey();
  $("try-form").addEventListener("submit", predict);
  $("try-texts").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("try-form").requestSubmit();
  });
  $("train-file").addEventListener("change", readTrainingFile);
  $("train-form").addEventListener("submit", train);
  $("jobs-older").addEventListener("click", showOlderJobs);
  $("batch-form").addEventListener("submit", runBatch);
  $("batch-model").addEventListener("change", (event) => { event.target.dataset.chosen = "yes"; });
  $("batches-older").addEventListener("click", showOlderBatches);
  window.addEventListener("hashchange", () => showScreen());
  showScreen(false);
  start();
  setTimeout(pollJobs, POLL_ACTIVE_MS);
});
