// The dashboard's script: everything it shows comes from the JSON API, read with the caller's
// key when the API asks for one, and every value a task carries is written as text
// (textContent, attributes), never parsed as HTML. It refreshes only when an event says
// something changed: no timer asks the API anything.

const KEY_STORAGE = "task-service.api-key";
const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const CANCELLABLE = new Set(["PENDING", "PROCESSING"]);
const RETRYABLE = new Set(["FAILED"]);
const REFRESH_AFTER_EVENTS_MS = 1000; // one refresh of the figures per second at most

// ---- The API, with the key ----------------------------------------------------------------

let keyRequest = null;

function askForKey(message) {
  if (keyRequest) return keyRequest;
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  document.getElementById("api-key-error").textContent = message;
  input.value = "";
  keyRequest = new Promise((resolve) => {
    const submitted = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        document.getElementById("api-key-error").textContent = "Enter a key.";
        return;
      }
      sessionStorage.setItem(KEY_STORAGE, key);
      form.removeEventListener("submit", submitted);
      dialog.removeEventListener("close", reopen);
      dialog.close();
      keyRequest = null;
      resolve();
    };
    // Nothing works without a key: closing the dialog (Escape) brings it back.
    const reopen = () => dialog.showModal();
    form.addEventListener("submit", submitted);
    dialog.addEventListener("close", reopen);
  });
  dialog.showModal();
  input.focus();
  return keyRequest;
}

function withKey(headers) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

async function api(path, { method = "GET", body } = {}) {
  for (;;) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const sent = sessionStorage.getItem(KEY_STORAGE);
    const response = await fetch(path, {
      method,
      headers: withKey(headers),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (response.status !== 401) return response;
    await askForKey(sent ? "That key was not accepted." : "");
  }
}

async function json(path) {
  const response = await api(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// Server-Sent Events through fetch, which can send the key (an EventSource cannot send
// headers). It resumes after the last event id it saw, as an EventSource would.
function subscribe(path, { onEvents, onEnd, lastEventId = null }) {
  let lastId = lastEventId;
  let retryMs = 2000;
  let stopped = false;
  let controller = null;

  function parse(block, events) {
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (id !== null) lastId = id;
    if (data.length) events.push(JSON.parse(data.join("\n")));
  }

  async function read(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      const blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      const events = [];
      for (const block of blocks) parse(block, events);
      if (events.length) onEvents(events);
    }
  }

  async function run() {
    while (!stopped) {
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
        controller = new AbortController();
        const sent = sessionStorage.getItem(KEY_STORAGE);
        const response = await fetch(path, {
          headers: withKey(headers),
          signal: controller.signal,
          cache: "no-store",
        });
        if (response.status === 401) {
          await askForKey(sent ? "That key was not accepted." : "");
          continue;
        }
        if (response.status === 204) break; // nothing more will come (a final task)
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        setLive("live");
        await read(response);
      } catch (error) {
        if (stopped) break;
      }
      if (stopped) break;
      setLive("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
    if (onEnd) onEnd();
  }

  run();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
    get lastEventId() {
      return lastId;
    },
  };
}

// ---- Small DOM helpers: text only ---------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setText(id, value) {
  const node = document.getElementById(id);
  if (node) node.textContent = value;
}

// Numbers and times are formatted here rather than with Intl (toLocaleString), whose first
// use in a new page costs it tens of milliseconds before anything is drawn.
function number(value) {
  if (value === null || value === undefined) return "—";
  return String(Math.trunc(Number(value))).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

const pad = (value) => String(value).padStart(2, "0");

function clock(when) {
  return `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
}

function localTime(when) {
  return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ${clock(when)}`;
}

function timeElement(iso) {
  if (!iso) return document.createTextNode("—");
  return el("time", { datetime: iso, title: iso }, localTime(new Date(iso)));
}

function badge(status) {
  return el("span", { class: `badge status-${status.toLowerCase()}` }, status);
}

function pretty(value) {
  return value === null || value === undefined ? "—" : JSON.stringify(value, null, 2);
}

function setLive(state) {
  setText("live", state);
  document.body.dataset.live = state;
}

function taskPath(taskId) {
  return `/api/tasks/${encodeURIComponent(taskId)}`;
}

// ---- The overview -------------------------------------------------------------------------

function overview() {
  const tbody = document.querySelector("#tasks tbody");
  const loadMore = document.getElementById("load-more");
  const statusFilter = document.getElementById("filter-status");
  const typeFilter = document.getElementById("filter-type");
  // The newest event seen for each task, so that a page read just before it does not undo it.
  const latest = new Map();
  let cursor = null;
  let refreshTimer = null;
  let listGeneration = 0;

  function listQuery(extra = {}) {
    const query = new URLSearchParams({ limit: "20", ...extra });
    if (statusFilter.value) query.set("status", statusFilter.value);
    if (typeFilter.value) query.set("type", typeFilter.value);
    return `/api/tasks?${query}`;
  }

  function cell(field, content) {
    return el("td", { "data-field": field }, content);
  }

  function applyEvent(tr, event) {
    tr.querySelector('[data-field="status"]').replaceChildren(badge(event.status));
    tr.querySelector('[data-field="attempts"]').textContent = String(event.attempts);
  }

  function row(task) {
    const link = el("a", { href: `/dashboard/tasks/${encodeURIComponent(task.task_id)}` }, task.title);
    const tr = el(
      "tr",
      { "data-task-id": task.task_id },
      cell("title", link),
      cell("type", task.type),
      cell("status", badge(task.status)),
      cell("attempts", String(task.attempts)),
      cell("created", timeElement(task.created_at)),
    );
    const seen = latest.get(task.task_id);
    if (seen && seen.updated_at > task.updated_at) applyEvent(tr, seen);
    return tr;
  }

  function rowOf(taskId) {
    return tbody.querySelector(`tr[data-task-id="${CSS.escape(taskId)}"]`);
  }

  async function loadPage(reset) {
    const generation = reset ? ++listGeneration : listGeneration;
    const page = await json(listQuery(reset || !cursor ? {} : { cursor }));
    if (generation !== listGeneration) return; // the filters changed meanwhile
    if (reset) tbody.replaceChildren();
    for (const task of page.items) {
      if (!rowOf(task.task_id)) tbody.append(row(task));
    }
    cursor = page.next_cursor;
    loadMore.hidden = cursor === null;
    setText("list-status", tbody.children.length ? "" : "No tasks match.");
  }

  // The first page again, merged: new tasks go on top, known ones take its state.
  async function mergeFirstPage() {
    const generation = listGeneration;
    const page = await json(listQuery());
    if (generation !== listGeneration) return;
    let anchor = tbody.firstElementChild;
    for (const task of page.items) {
      const existing = rowOf(task.task_id);
      const fresh = row(task);
      if (existing) {
        existing.replaceWith(fresh);
        anchor = fresh.nextElementSibling;
      } else {
        tbody.insertBefore(fresh, anchor);
      }
    }
    if (tbody.children.length) setText("list-status", "");
  }

  function renderCounts(stats) {
    for (const [status, count] of Object.entries(stats.counts)) {
      const node = document.querySelector(`[data-count="${status}"]`);
      if (node) node.textContent = number(count);
    }
    setText("count-total", number(stats.total));
  }

  function renderQueue(queue) {
    setText("queue-ready", number(queue.queue_ready));
    setText("outbox-backlog", number(queue.outbox_backlog));
    setText("backlog-measured", queue.measured_at ? `Measured ${clock(new Date(queue.measured_at))}` : "Not measured yet");
  }

  function renderThroughput(throughput) {
    const minutes = throughput.minutes;
    const svg = document.getElementById("throughput-chart");
    const ns = "http://www.w3.org/2000/svg";
    const width = 600;
    const height = 120;
    const top = Math.max(1, ...minutes.map((m) => Math.max(m.submitted, m.completed)));
    const slot = width / Math.max(1, minutes.length);
    const bars = [];
    minutes.forEach((minute, index) => {
      for (const [series, offset] of [["submitted", 0.1], ["completed", 0.5]]) {
        const value = minute[series];
        if (!value) continue;
        const barHeight = (value / top) * (height - 4);
        const bar = document.createElementNS(ns, "rect");
        bar.setAttribute("class", series);
        bar.setAttribute("x", String(index * slot + offset * slot));
        bar.setAttribute("width", String(slot * 0.4));
        bar.setAttribute("y", String(height - barHeight));
        bar.setAttribute("height", String(barHeight));
        bars.push(bar);
      }
    });
    svg.replaceChildren(...bars);
    const submitted = minutes.reduce((sum, m) => sum + m.submitted, 0);
    const completed = minutes.reduce((sum, m) => sum + m.completed, 0);
    const last = minutes[minutes.length - 1] || { submitted: 0, completed: 0 };
    setText(
      "throughput-summary",
      `${number(submitted)} submitted and ${number(completed)} completed in the last hour;` +
        ` ${number(last.submitted)} and ${number(last.completed)} this minute` +
        ` (busiest minute: ${number(top === 1 && !submitted && !completed ? 0 : top)}).`,
    );
  }

  async function refreshFigures() {
    const [stats, queue, throughput] = await Promise.all([
      json("/api/tasks/stats"),
      json("/api/queue"),
      json("/api/tasks/throughput?minutes=60"),
    ]);
    renderCounts(stats);
    renderQueue(queue);
    renderThroughput(throughput);
  }

  function refreshSoon() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        await Promise.all([refreshFigures(), mergeFirstPage()]);
      } catch (error) {
        setText("list-status", `Could not refresh: ${error.message}`);
      }
    }, REFRESH_AFTER_EVENTS_MS);
  }

  function onEvents(events) {
    for (const event of events) {
      const seen = latest.get(event.task_id);
      if (!seen || seen.event_id < event.event_id) latest.set(event.task_id, event);
      const tr = rowOf(event.task_id);
      if (tr) applyEvent(tr, event);
    }
    while (latest.size > 5000) latest.delete(latest.keys().next().value);
    refreshSoon();
  }

  for (const filter of [statusFilter, typeFilter]) {
    filter.addEventListener("change", () => loadPage(true).catch(showListError));
  }
  loadMore.addEventListener("click", () => loadPage(false).catch(showListError));

  function showListError(error) {
    setText("list-status", `Could not load tasks: ${error.message}`);
  }

  // The page's data first, so that its requests leave before anything else is set up.
  const loaded = Promise.all([refreshFigures(), loadPage(true)]);
  submitForm(async (taskId) => {
    await mergeFirstPage();
    return taskId;
  });
  subscribe("/api/events", { onEvents });
  return loaded;
}

// ---- The submit form ----------------------------------------------------------------------

const FORM_FIELDS = ["title", "description", "type", "payload", "metadata", "delay_seconds"];

function submitForm(onAccepted) {
  const form = document.getElementById("submit-form");
  const catalogue = JSON.parse(document.getElementById("catalogue").textContent);
  const typeSelect = document.getElementById("type");
  const payload = document.getElementById("payload");
  let lastExample = null;

  function showType() {
    const entry = catalogue.find((item) => item.name === typeSelect.value);
    if (!entry) return;
    setText("type-help", entry.description);
    setText("payload-schema", entry.schema);
    const example = entry.example === "{}" ? "" : entry.example;
    if (payload.value === "" || payload.value === lastExample) payload.value = example;
    lastExample = example;
  }

  function clearErrors() {
    for (const name of FORM_FIELDS) {
      setText(`${name}-error`, "");
      document.getElementById(name).removeAttribute("aria-invalid");
    }
  }

  function fieldError(name, message) {
    const target = FORM_FIELDS.includes(name) ? name : null;
    if (!target) return false;
    const node = document.getElementById(`${target}-error`);
    node.textContent = node.textContent ? `${node.textContent} ${message}` : message;
    document.getElementById(target).setAttribute("aria-invalid", "true");
    return true;
  }

  function parseJson(name) {
    const text = document.getElementById(name).value.trim();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (error) {
      fieldError(name, "This is not valid JSON.");
      return null;
    }
  }

  function body() {
    const request = {
      title: document.getElementById("title").value,
      description: document.getElementById("description").value,
      type: typeSelect.value,
    };
    for (const name of ["payload", "metadata"]) {
      const value = parseJson(name);
      if (value === null) return null;
      if (value !== undefined) request[name] = value;
    }
    const delay = document.getElementById("delay_seconds").value.trim();
    if (delay) request.delay_seconds = Number(delay);
    return request;
  }

  function focusFirstInvalid() {
    const invalid = form.querySelector('[aria-invalid="true"]');
    if (invalid) invalid.focus();
  }

  async function submit(event) {
    event.preventDefault();
    clearErrors();
    const status = document.getElementById("submit-status");
    status.replaceChildren();
    const request = body();
    if (request === null) {
      status.textContent = "Fix the fields marked above.";
      focusFirstInvalid();
      return;
    }
    const button = document.getElementById("submit-button");
    button.disabled = true;
    try {
      const response = await api("/api/tasks", { method: "POST", body: request });
      const answer = await response.json().catch(() => ({}));
      if (response.status === 202) {
        const link = el("a", { href: `/dashboard/tasks/${encodeURIComponent(answer.task_id)}` }, answer.task_id);
        status.replaceChildren("Accepted: task ", link, ".");
        document.getElementById("title").value = "";
        document.getElementById("description").value = "";
        await onAccepted(answer.task_id);
        return;
      }
      let placed = false;
      for (const error of answer.errors || []) {
        placed = fieldError(String(error.field).split(".")[0], error.message) || placed;
      }
      status.textContent = placed ? "Fix the fields marked above." : answer.detail || `HTTP ${response.status}`;
      focusFirstInvalid();
    } catch (error) {
      status.textContent = `Could not submit: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  typeSelect.addEventListener("change", showType);
  form.addEventListener("submit", submit);
  showType();
}

// ---- One task -----------------------------------------------------------------------------

const EVENT_LABELS = {
  created: () => "Created",
  started: (event) => `Attempt ${event.attempts} started`,
  progress: (event) => `Progress ${Math.round((event.progress || 0) * 100)} %${event.note ? `: ${event.note}` : ""}`,
  retry_scheduled: (event) => `Attempt ${event.attempts} failed; retry scheduled`,
  completed: () => "Completed",
  failed: (event) => `Failed after ${event.attempts} attempt${event.attempts === 1 ? "" : "s"}`,
  cancelled: () => "Cancelled",
  redriven: () => "Retried: back to pending",
};

function taskPage() {
  const taskId = document.body.dataset.taskId;
  const timeline = document.getElementById("timeline");
  const cancelButton = document.getElementById("cancel-button");
  const retryButton = document.getElementById("retry-button");
  let task = null;
  let subscription = null;
  let ended = false;

  function setStatus(status) {
    const node = document.getElementById("task-status");
    node.textContent = status;
    node.className = `badge status-${status.toLowerCase()}`;
    cancelButton.disabled = !CANCELLABLE.has(status);
    retryButton.disabled = !RETRYABLE.has(status);
  }

  function setProgress(progress, note) {
    const bar = document.getElementById("task-progress");
    bar.value = progress ?? 0;
    bar.textContent = `${Math.round((progress ?? 0) * 100)} %`;
    setText("task-progress-note", note || "");
  }

  function render(record) {
    task = record;
    document.title = `${record.title} · Task service`;
    setText("task-title", record.title);
    setText("task-description", record.description ?? "");
    setText("task-type", record.type);
    setText("task-attempts", String(record.attempts));
    document.getElementById("task-created").replaceChildren(timeElement(record.created_at));
    document.getElementById("task-run-at").replaceChildren(record.run_at ? timeElement(record.run_at) : "at once");
    setText("task-payload", pretty(record.payload));
    setText("task-metadata", pretty(record.metadata));
    setText("task-result", pretty(record.result));
    setText("task-error", record.last_error ? `Last error: ${record.last_error}` : "");
    setProgress(record.progress, record.progress_note);
    setStatus(record.status);
    renderWebhook(record.callback);
  }

  function renderWebhook(callback) {
    const existing = timeline.querySelector('li[data-kind="webhook"]');
    if (!callback) {
      if (existing) existing.remove();
      return;
    }
    const answer = callback.last_status_code ? `, last answer ${callback.last_status_code}` : "";
    const error = callback.last_error ? ` (${callback.last_error})` : "";
    const item = el(
      "li",
      { "data-kind": "webhook" },
      el("span", { class: "what" }, `Webhook to ${callback.url}: ${callback.state}`),
      el("span", { class: "detail" }, `${callback.attempts} attempt${callback.attempts === 1 ? "" : "s"}${answer}${error}`),
    );
    if (existing) existing.replaceWith(item);
    else timeline.append(item);
  }

  function timelineItem(event) {
    const label = (EVENT_LABELS[event.kind] || (() => event.kind))(event);
    const item = el(
      "li",
      { "data-kind": event.kind, "data-event-id": String(event.event_id) },
      el("span", { class: "what" }, label),
      timeElement(event.updated_at),
    );
    if (event.error) item.append(el("span", { class: "detail error-text" }, event.error));
    return item;
  }

  function addToTimeline(event) {
    if (timeline.querySelector(`li[data-event-id="${event.event_id}"]`)) return;
    const item = timelineItem(event);
    const last = timeline.querySelector("li[data-event-id]:last-of-type");
    const webhook = timeline.querySelector('li[data-kind="webhook"]');
    // Progress reports of one attempt take one line, the newest.
    if (event.kind === "progress" && last && last.dataset.kind === "progress") last.replaceWith(item);
    else timeline.insertBefore(item, webhook);
    if (event.kind === "created" && task && task.run_at) {
      timeline.insertBefore(
        el("li", { "data-kind": "scheduled" }, el("span", { class: "what" }, "Scheduled to start"), timeElement(task.run_at)),
        webhook,
      );
    }
  }

  async function reload() {
    const response = await api(taskPath(taskId));
    if (response.ok) render(await response.json());
  }

  function follow(lastEventId) {
    ended = false;
    subscription = subscribe(`${taskPath(taskId)}/events`, {
      lastEventId,
      onEvents(events) {
        let final = false;
        for (const event of events) {
          addToTimeline(event);
          setStatus(event.status);
          setText("task-attempts", String(event.attempts));
          setProgress(event.progress, event.note);
          if (event.error) setText("task-error", `Last error: ${event.error}`);
          final = final || FINAL.has(event.status);
        }
        if (final) reload();
      },
      onEnd() {
        ended = true;
        setLive("final");
      },
    });
  }

  async function act(action, button) {
    const status = document.getElementById("action-status");
    button.disabled = true;
    const response = await api(`${taskPath(taskId)}/${action}`, { method: "POST" });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      status.textContent = action === "cancel" ? "Cancelled." : "Queued again.";
      render(answer.task_id ? answer : { ...task, ...answer });
      if (ended) follow(subscription ? subscription.lastEventId : 0);
      await reload();
    } else {
      status.textContent = answer.detail || `HTTP ${response.status}`;
      await reload();
    }
  }

  cancelButton.addEventListener("click", () => act("cancel", cancelButton));
  retryButton.addEventListener("click", () => act("retry", retryButton));

  return (async () => {
    const response = await api(taskPath(taskId));
    if (response.status === 404 || response.status === 400) {
      document.getElementById("task-missing").hidden = false;
      document.getElementById("task-body").hidden = true;
      setText("task-title", "Task not found");
      setLive("—");
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    follow(0); // from the first event: the whole timeline, then live
  })();
}

// ---- Start ----------------------------------------------------------------------------------

const pages = { overview, task: taskPage };
const start = pages[document.body.dataset.page];
if (start) {
  start()
    .then(() => {
      document.body.dataset.ready = "true";
      performance.mark("dashboard-ready");
    })
    .catch((error) => {
      document.body.dataset.ready = "error";
      setLive(`error: ${error.message}`);
    });
}
