// The playground: an editor with a highlighted overlay, a language picker
// from /api/v1/runtimes, and a run that streams its output over WebSocket.

import {
  api,
  bindTokenForm,
  formatKb,
  formatMs,
  h,
  readToken,
  socketUrl,
  splitArgs,
} from "./api.js";
import { highlightInto } from "./highlight.js";
import { fileNameFor, sampleFor } from "./samples.js";

const $ = (id) => document.getElementById(id);
const code = $("code");
const highlight = $("highlight");
const picker = $("language");
const output = $("output");
const DRAFT_KEY = "kiln.playground.drafts";

/** Runtimes by language name. */
let runtimes = new Map();
/** The program being written, per language, for this session. */
const drafts = JSON.parse(sessionStorage.getItem(DRAFT_KEY) ?? "{}");
/** The run in progress: its socket. */
let current = null;

function language() {
  return picker.value;
}

function aliasesOf(name) {
  return runtimes.get(name)?.aliases ?? [];
}

function refreshHighlight() {
  highlightInto(highlight, code.value, language());
  syncScroll();
}

function syncScroll() {
  highlight.scrollTop = code.scrollTop;
  highlight.scrollLeft = code.scrollLeft;
}

function saveDraft() {
  drafts[language()] = code.value;
  sessionStorage.setItem(DRAFT_KEY, JSON.stringify(drafts));
}

function showProgram(name) {
  code.value = drafts[name] ?? sampleFor(name, aliasesOf(name)).content;
  refreshHighlight();
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function appendOutput(stream, data) {
  const last = output.lastElementChild;
  if (last?.dataset.stream === stream) {
    last.append(data);
  } else {
    output.append(
      h("span", { class: `stream-${stream}`, "data-stream": stream }, data),
    );
  }
  output.scrollTop = output.scrollHeight;
}

function setRunning(running) {
  $("run").disabled = running || picker.disabled;
  $("cancel").disabled = !running;
  // Lines can be typed into an interactive run until its input is ended.
  const typing = running && current?.interactive && !current.inputEnded;
  for (const id of ["live-input", "send", "end-input"]) {
    $(id).disabled = !typing;
  }
  output.setAttribute("aria-busy", running ? "true" : "false");
}

function showResult(result, node) {
  $("facts").hidden = false;
  const verdict = $("verdict");
  verdict.replaceChildren(
    h("span", { class: `verdict verdict-${result.verdict}` }, result.verdict),
  );
  $("time").textContent = formatMs(result.timeMs);
  $("memory").textContent = formatKb(result.memoryKb);
  $("exit-code").textContent = result.signal
    ? `signal ${result.signal}`
    : String(result.exitCode ?? "–");
  $("node").textContent = node ?? result.node ?? "–";
  const compile = result.compile;
  const compileText = compile && compile.verdict !== "ok"
    ? [compile.stdout, compile.stderr].filter(Boolean).join("")
    : "";
  $("compile-output").hidden = !compileText;
  $("compile-output").textContent = compileText;
  // Output the stream did not carry (or a late socket) comes from the result.
  if (!output.textContent && (result.stdout || result.stderr)) {
    if (result.stdout) appendOutput("stdout", result.stdout);
    if (result.stderr) appendOutput("stderr", result.stderr);
  }
  const reason = result.reason ? `: ${result.reason}` : "";
  setStatus(
    result.verdict === "ok" ? "ok" : "failed",
    `Finished: ${result.verdict}${reason} in ${formatMs(result.timeMs)}.`,
  );
}

async function run() {
  if (current || picker.disabled) return;
  const name = language();
  const request = {
    language: name,
    files: [{ name: fileNameFor(name, aliasesOf(name)), content: code.value }],
    stdin: $("stdin").value,
    args: splitArgs($("args").value),
    wait: false,
  };
  const interactive = $("interactive").checked;
  if (interactive) request.interactive = true;
  output.replaceChildren();
  showNotice("");
  $("facts").hidden = true;
  $("compile-output").hidden = true;
  setStatus("submitting", "Submitting…");
  current = {
    socket: null,
    node: null,
    done: false,
    interactive,
    inputEnded: false,
  };
  setRunning(true);
  let jobId;
  try {
    ({ jobId } = await api("/api/v1/jobs", {
      method: "POST",
      body: JSON.stringify(request),
    }));
  } catch (error) {
    setStatus("failed", `Could not submit: ${error.message}`);
    current = null;
    setRunning(false);
    return;
  }
  output.dataset.jobId = jobId;
  const run = current;
  const socket = new WebSocket(
    socketUrl(`/api/v1/jobs/${encodeURIComponent(jobId)}/stream`, readToken()),
  );
  run.socket = socket;
  socket.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    switch (event.type) {
      case "accepted":
        setStatus("queued", `Accepted as ${jobId}.`);
        break;
      case "queued":
        setStatus("queued", `Queued at position ${event.position}.`);
        break;
      case "started":
        run.node = event.node;
        setStatus("running", `Running on ${event.node}…`);
        if (run.interactive) $("live-input").focus();
        break;
      case "restarted":
        output.replaceChildren();
        setStatus("queued", "Its node was lost; waiting to run again…");
        break;
      case "output":
        appendOutput(event.stream, event.data);
        break;
      case "error":
        showNotice(event.message);
        break;
      case "result":
        run.done = true;
        showResult(event.result, run.node);
        break;
    }
  });
  socket.addEventListener("close", async () => {
    if (!run.done) {
      try {
        const job = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
        if (job.result) {
          showResult(job.result, run.node);
        } else {
          setStatus(
            "failed",
            `Lost the job's stream while it was ${job.state}.`,
          );
        }
      } catch (error) {
        setStatus("failed", `Lost the job's stream: ${error.message}`);
      }
    }
    if (current === run) current = null;
    setRunning(false);
  });
}

function showNotice(text) {
  const notice = $("notice");
  notice.hidden = !text;
  notice.textContent = text ?? "";
}

/** Sends `{type:"stdin", data, eof}` to the running program (where the server allows it). */
function sendInput(data, eof) {
  if (current?.socket?.readyState !== WebSocket.OPEN) return;
  current.socket.send(JSON.stringify({ type: "stdin", data, eof }));
  if (data) appendOutput("stdin", data);
  if (eof) {
    current.inputEnded = true;
    setRunning(true);
  }
}

function cancel() {
  if (current?.socket?.readyState === WebSocket.OPEN) {
    current.socket.send(JSON.stringify({ type: "cancel" }));
    setStatus("cancelling", "Cancelling…");
  }
}

/** Tab and Shift+Tab indent in the editor; Esc lets the next Tab leave it. */
let tabLeaves = false;
function onEditorKey(event) {
  if (event.key === "Escape") {
    tabLeaves = true;
    return;
  }
  if (event.key !== "Tab" || tabLeaves || event.ctrlKey || event.altKey) {
    tabLeaves = false;
    return;
  }
  event.preventDefault();
  const { selectionStart: start, selectionEnd: end, value } = code;
  const lineStart = value.lastIndexOf("\n", start - 1) + 1;
  if (event.shiftKey) {
    const indent = value.slice(lineStart).match(/^ {1,2}/)?.[0] ?? "";
    if (!indent) return;
    code.setRangeText("", lineStart, lineStart + indent.length, "preserve");
  } else if (start === end) {
    code.setRangeText("  ", start, end, "end");
  } else {
    code.setRangeText("  ", lineStart, lineStart, "preserve");
  }
  code.dispatchEvent(new Event("input"));
}

async function loadRuntimes() {
  try {
    const list = await api("/api/v1/runtimes");
    runtimes = new Map(list.map((runtime) => [runtime.language, runtime]));
    const previous = sessionStorage.getItem("kiln.playground.language");
    picker.replaceChildren(
      ...list.map((runtime) =>
        h(
          "option",
          { value: runtime.language, title: runtime.version },
          `${runtime.language} ${
            runtime.version.match(/\d+(\.\d+)+/)?.[0] ?? ""
          }`.trim(),
        )
      ),
    );
    picker.disabled = list.length === 0;
    if (list.length === 0) {
      setStatus("failed", "The cluster offers no language yet.");
    } else {
      if (previous && runtimes.has(previous)) picker.value = previous;
      showProgram(language());
      setStatus("idle", "Write a program and run it.");
    }
  } catch (error) {
    picker.replaceChildren(h("option", {}, "unavailable"));
    picker.disabled = true;
    setStatus("failed", `Could not load the languages: ${error.message}`);
  }
  setRunning(Boolean(current));
}

function start() {
  bindTokenForm($("token-form"), () => loadRuntimes());
  code.addEventListener("input", () => {
    refreshHighlight();
    saveDraft();
  });
  code.addEventListener("scroll", syncScroll);
  code.addEventListener("keydown", onEditorKey);
  picker.addEventListener("change", () => {
    sessionStorage.setItem("kiln.playground.language", language());
    showProgram(language());
  });
  $("sample").addEventListener("click", () => {
    code.value = sampleFor(language(), aliasesOf(language())).content;
    code.dispatchEvent(new Event("input"));
    code.focus();
  });
  $("run-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  $("cancel").addEventListener("click", cancel);
  $("input-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("live-input");
    sendInput(`${input.value}\n`, false);
    input.value = "";
  });
  $("end-input").addEventListener("click", () => sendInput("", true));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    }
  });
  refreshHighlight();
  loadRuntimes();
}

start();
