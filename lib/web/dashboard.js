// The live dashboard: cluster status and job events from the master's SSE
// stream (/api/v1/events), recent jobs from /api/v1/jobs. No reload.

import {
  api,
  bindTokenForm,
  formatKb,
  formatMs,
  h,
  readToken,
  withToken,
} from "./api.js";
import { createSparkline, drawSparkline, SAMPLES } from "./sparkline.js";

const RECENT_LIMIT = 25;

const $ = (id) => document.getElementById(id);

/** Per node id: its card and its CPU and RAM history. */
const cards = new Map();
/** Jobs waiting or running, by id, from `job` events. */
const activeJobs = new Map();
/** Finished jobs, most recent first. */
let recentJobs = [];
/** Per language: counts of the finished jobs this page has seen. */
const languageCounts = new Map();
let source = null;

function setConnection(state, text) {
  const element = $("connection");
  element.dataset.state = state;
  element.textContent = text;
}

function nodeCard(node) {
  const cpu = createSparkline(`CPU of ${node.name}`, "cpu");
  const ram = createSparkline(`RAM of ${node.name}`, "ram");
  const card = h(
    "li",
    { class: "node", "data-node-id": node.id, "data-node-name": node.name },
    h(
      "header",
      {},
      h("h3", { class: "node-name" }, node.name),
      h("span", { class: "state" }),
    ),
    h("p", { class: "node-address" }),
    h(
      "dl",
      { class: "node-facts" },
      h("div", {}, h("dt", {}, "Jobs"), h("dd", { class: "node-load" })),
      h("div", {}, h("dt", {}, "Sandbox"), h("dd", { class: "node-sandbox" })),
    ),
    h(
      "div",
      { class: "charts" },
      h(
        "figure",
        {},
        h("figcaption", {}, "CPU ", h("b", { class: "cpu-value" })),
        cpu,
      ),
      h(
        "figure",
        {},
        h("figcaption", {}, "RAM ", h("b", { class: "ram-value" })),
        ram,
      ),
    ),
    h("ul", { class: "languages", "aria-label": `Languages of ${node.name}` }),
  );
  return { card, cpu, ram, cpuHistory: [], ramHistory: [], languages: "" };
}

function updateCard(entry, node) {
  const { card } = entry;
  card.dataset.state = node.state;
  const state = card.querySelector(".state");
  state.textContent = node.local ? `${node.state} · master` : node.state;
  state.className = `state state-${node.state}`;
  card.querySelector(".node-address").textContent = node.address;
  card.querySelector(".node-load").textContent =
    `${node.running} / ${node.slots}`;
  // The layers its jobs run under say more than the mode that chose them.
  const sandbox = node.sandbox;
  const sandboxCell = card.querySelector(".node-sandbox");
  sandboxCell.textContent = !sandbox
    ? "unknown"
    : sandbox.layers.length === 0
    ? "none"
    : sandbox.layers.join(" + ");
  sandboxCell.title = sandbox
    ? `--sandbox ${sandbox.mode}` +
      Object.entries(sandbox.missing).map(([layer, why]) =>
        `\n${layer} missing: ${why}`
      ).join("")
    : "";
  card.querySelector(".cpu-value").textContent = `${
    Math.round(node.cpuPercent)
  }%`;
  card.querySelector(".ram-value").textContent = `${
    Math.round(node.ramPercent)
  }%`;
  for (
    const [history, value] of [
      [entry.cpuHistory, node.cpuPercent],
      [entry.ramHistory, node.ramPercent],
    ]
  ) {
    history.push(value);
    if (history.length > SAMPLES) history.shift();
  }
  drawSparkline(entry.cpu, entry.cpuHistory);
  drawSparkline(entry.ram, entry.ramHistory);
  const languages = node.languages.map((l) => `${l.name} ${l.version}`).join(
    "|",
  );
  if (languages !== entry.languages) {
    entry.languages = languages;
    card.querySelector(".languages").replaceChildren(
      ...node.languages.map((l) =>
        h(
          "li",
          { title: l.version },
          l.name,
          " ",
          h("small", {}, shortVersion(l.version)),
        )
      ),
    );
  }
}

/** The first version-looking word of a toolchain's version line. */
function shortVersion(version) {
  return version.match(/\d+(\.\d+)+/)?.[0] ?? version;
}

function renderStatus(status) {
  $("master-name").textContent = status.master;
  $("node-count").textContent = String(status.nodes.length);
  $("slot-count").textContent = String(
    status.nodes.reduce((sum, node) => sum + node.slots, 0),
  );
  $("running-count").textContent = String(status.running);
  $("queued-count").textContent = String(status.queued);
  const list = $("nodes");
  const seen = new Set();
  for (const node of status.nodes) {
    seen.add(node.id);
    let entry = cards.get(node.id);
    if (!entry) {
      entry = nodeCard(node);
      cards.set(node.id, entry);
      list.append(entry.card);
    }
    updateCard(entry, node);
  }
  for (const [id, entry] of cards) {
    if (!seen.has(id)) {
      entry.card.remove();
      cards.delete(id);
    }
  }
  $("no-nodes").hidden = cards.size > 0;
}

function shortId(jobId) {
  return h(
    "code",
    { title: jobId },
    jobId.length > 10 ? jobId.slice(0, 8) : jobId,
  );
}

function verdictBadge(verdict) {
  return h("span", { class: `verdict verdict-${verdict}` }, verdict ?? "–");
}

function renderActive() {
  const queued = [...activeJobs.values()]
    .filter((job) => job.state === "queued")
    .sort((a, b) => (a.position ?? Infinity) - (b.position ?? Infinity));
  const running = [...activeJobs.values()].filter((job) =>
    job.state === "running"
  );
  $("queue").replaceChildren(
    ...(queued.length
      ? queued.map((job) =>
        h(
          "tr",
          { "data-job-id": job.jobId },
          h("td", {}, job.position ?? "–"),
          h("td", {}, shortId(job.jobId)),
          h("td", {}, job.client || "–"),
          h("td", {}, job.language || "–"),
        )
      )
      : [emptyRow(4, "The queue is empty.")]),
  );
  $("running").replaceChildren(
    ...(running.length
      ? running.map((job) =>
        h(
          "tr",
          { "data-job-id": job.jobId },
          h("td", {}, shortId(job.jobId)),
          h("td", {}, job.client || "–"),
          h("td", {}, job.language || "–"),
          h("td", {}, job.node ?? "–"),
        )
      )
      : [emptyRow(4, "Nothing runs.")]),
  );
}

function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns }, text));
}

function renderRecent() {
  $("recent").replaceChildren(
    ...(recentJobs.length
      ? recentJobs.map((job) =>
        h(
          "tr",
          { "data-job-id": job.jobId },
          h("td", {}, shortId(job.jobId)),
          h("td", {}, job.client || "–"),
          h("td", {}, job.language || "–"),
          h("td", {}, verdictBadge(job.verdict)),
          h("td", { class: "number" }, formatMs(job.timeMs)),
          h("td", { class: "number" }, formatMs(job.queuedMs)),
          h("td", { class: "number" }, formatKb(job.memoryKb)),
          h("td", {}, job.node ?? "–"),
        )
      )
      : [emptyRow(8, "No job has finished yet.")]),
  );
  const rows = [...languageCounts.entries()].sort((a, b) =>
    b[1].total - a[1].total
  );
  $("languages").replaceChildren(
    ...(rows.length
      ? rows.map(([language, counts]) =>
        h(
          "tr",
          { "data-language": language },
          h("th", { scope: "row" }, language),
          h("td", { class: "number" }, counts.total),
          h("td", { class: "number" }, counts.ok),
          h("td", { class: "number" }, counts.total - counts.ok),
        )
      )
      : [emptyRow(4, "No job yet.")]),
  );
}

function addFinished(job) {
  if (recentJobs.some((known) => known.jobId === job.jobId)) return;
  recentJobs.unshift(job);
  recentJobs.sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0));
  if (recentJobs.length > RECENT_LIMIT) {
    recentJobs = recentJobs.slice(0, RECENT_LIMIT);
  }
  const counts = languageCounts.get(job.language || "?") ?? { total: 0, ok: 0 };
  counts.total++;
  if (job.verdict === "ok") counts.ok++;
  languageCounts.set(job.language || "?", counts);
}

function onJob(job) {
  if (job.state === "finished") {
    activeJobs.delete(job.jobId);
    addFinished({ ...job, finishedAt: Date.now() });
    renderRecent();
  } else {
    // A field an event leaves empty (a queued job's language) keeps what was known.
    const known = activeJobs.get(job.jobId) ?? {};
    const fresh = Object.fromEntries(
      Object.entries(job).filter(([, value]) => value !== "" && value != null),
    );
    activeJobs.set(job.jobId, { ...known, ...fresh });
  }
  renderActive();
}

async function loadRecent() {
  try {
    const { jobs } = await api(`/api/v1/jobs?limit=${RECENT_LIMIT}`);
    // Oldest first, so each lands before the ones after it.
    jobs.reverse().forEach((job, i) => addFinished({ ...job, finishedAt: i }));
    renderRecent();
  } catch (error) {
    setConnection("error", `recent jobs: ${error.message}`);
  }
}

function connect() {
  source?.close();
  setConnection("connecting", "connecting…");
  source = new EventSource(withToken("/api/v1/events", readToken()));
  source.addEventListener("open", () => setConnection("live", "live"));
  source.addEventListener("status", (event) => {
    setConnection("live", "live");
    renderStatus(JSON.parse(event.data));
  });
  source.addEventListener("job", (event) => onJob(JSON.parse(event.data)));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      setConnection("error", "disconnected: is the access token right?");
    } else {
      setConnection("connecting", "reconnecting…");
    }
  });
}

function start() {
  bindTokenForm($("token-form"), () => {
    recentJobs = [];
    languageCounts.clear();
    activeJobs.clear();
    connect();
    loadRecent();
  });
  renderActive();
  renderRecent();
  connect();
  loadRecent();
}

start();
