/**
 * The dashboard and the playground in headless Chromium (driven by
 * puppeteer-core), served by the real HTTP API of a real master on
 * 127.0.0.1. Every wait is on a DOM condition, never on time. The browser
 * opens nothing beyond loopback: its background services are off, and each
 * test asserts every request it saw went to 127.0.0.1.
 *
 * Skipped, with the reason printed, when no Chromium binary is found (set
 * `KILN_CHROMIUM` to its path to choose one). With `KILN_SCREENSHOTS=DIR`
 * the tests save `dashboard.png` and `playground.png` into DIR (the README's
 * come from `KILN_SCREENSHOTS=docs deno test -A tests/browser_test.ts`).
 */
// deno-lint-ignore-file no-console
import assert from "node:assert/strict";
import { join } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { HttpApi, MasterNode, SecondaryNode } from "../mod.ts";

/** Chromium's flags: no sandbox (containers), nothing that phones home. */
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/**
 * A safety net, not an assertion: a DOM condition that never comes fails
 * the test after this long instead of hanging it. No wait relies on it.
 */
const WAIT_LIMIT_MS = 60_000;

const chromium = await findChromium();
if (!chromium) {
  console.log(
    "browser tests skipped: no Chromium found (apt-get install chromium, or set KILN_CHROMIUM)",
  );
}

async function findChromium(): Promise<string | undefined> {
  const chosen = Deno.env.get("KILN_CHROMIUM");
  if (chosen) return chosen;
  const names = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
  ];
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    for (const name of names) {
      try {
        const info = await Deno.stat(join(dir, name));
        if (info.isFile) return join(dir, name);
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/**
 * The one place sanitizers are off: puppeteer keeps the browser's pipes
 * and timers in its own hands, beyond what the test can await.
 */
function browserTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    ignore: chromium === undefined,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

/** A master with one slot and the HTTP API in front of it, both on 127.0.0.1. */
async function startCluster(name: string, token = "") {
  const master = new MasterNode({
    hostname: "127.0.0.1",
    port: 0,
    name,
    slots: 1,
    token,
    resourceLogIntervalMs: 0,
  });
  await master.ready;
  const http = new HttpApi(master, { hostname: "127.0.0.1", port: 0 });
  const base = `http://127.0.0.1:${http.addr.port}`;
  return {
    master,
    base,
    async [Symbol.asyncDispose]() {
      await http[Symbol.asyncDispose]();
      await master.shutdown();
    },
  };
}

/** A fresh browser with a temporary profile, and a page that records where it connects. */
async function openBrowser() {
  const profile = await Deno.makeTempDir({ prefix: "kiln-chromium-" });
  const browser: Browser = await puppeteer.launch({
    executablePath: chromium!,
    ignoreDefaultArgs: true,
    args: CHROMIUM_FLAGS,
    userDataDir: profile,
  });
  const page: Page = await browser.newPage();
  page.setDefaultTimeout(WAIT_LIMIT_MS);
  await page.setViewport({ width: 1280, height: 860 });
  const foreign: string[] = [];
  const errors: string[] = [];
  page.on("request", (request) => {
    const { hostname, protocol } = new URL(request.url());
    if (protocol === "data:") return;
    if (hostname !== "127.0.0.1" && hostname !== "[::1]") {
      foreign.push(request.url());
    }
  });
  page.on("pageerror", (error) => errors.push(String(error)));
  return {
    page,
    browser,
    /** Every request went to loopback, and no script threw. */
    assertClean() {
      assert.deepEqual(foreign, []);
      assert.deepEqual(errors, []);
    },
    async [Symbol.asyncDispose]() {
      await browser.close();
      await Deno.remove(profile, { recursive: true });
    },
  };
}

async function screenshot(page: Page, name: string): Promise<void> {
  const dir = Deno.env.get("KILN_SCREENSHOTS");
  if (!dir) return;
  await Deno.mkdir(dir, { recursive: true });
  await page.screenshot({
    path: join(dir, name) as `${string}.png`,
    fullPage: true,
  });
}

/** Opens the playground with bash chosen, and `code` in the editor when given. */
async function openPlayground(page: Page, base: string, code?: string) {
  await page.goto(`${base}/playground`);
  await page.waitForSelector('#language option[value="bash"]');
  await page.select("#language", "bash");
  if (code === undefined) return;
  // A string, run in the page: this file has no DOM types.
  await page.evaluate(`{
    const editor = document.querySelector("#code");
    editor.value = ${JSON.stringify(code)};
    editor.dispatchEvent(new Event("input"));
  }`);
}

function nodeCard(name: string): string {
  return `.node[data-node-name="${name}"]`;
}

browserTest(
  "dashboard: a secondary appears when it joins and disappears when it leaves",
  async () => {
    await using cluster = await startCluster("web-master");
    await using browser = await openBrowser();
    const { page } = browser;
    await page.goto(`${cluster.base}/`);
    await page.waitForSelector(nodeCard("web-master"));
    await page.waitForSelector('#connection[data-state="live"]');

    const joined = Promise.withResolvers<void>();
    cluster.master.addEventListener("nodejoin", () => joined.resolve(), {
      once: true,
    });
    const secondary = new SecondaryNode({
      master: cluster.master.addr,
      name: "web-secondary",
      slots: 2,
    });
    try {
      await joined.promise;
      const card = await page.waitForSelector(nodeCard("web-secondary"));
      const text = await card!.evaluate((element) => element.textContent ?? "");
      assert.match(text, /bash/);
      assert.match(text, /\/ 2/);

      // Jobs fill the recent list and the per-language counts.
      for (const word of ["one", "two"]) {
        const { result } = cluster.master.run(
          {
            language: "bash",
            files: [{ name: "main.sh", content: `echo ${word}` }],
          },
          { client: "web-test" },
        );
        assert.equal((await result).verdict, "ok");
      }
      await page.waitForFunction(
        `document.querySelectorAll("#recent tr[data-job-id]").length === 2 &&
        document.querySelector('#languages tr[data-language="bash"] td')?.textContent === "2"`,
      );
      const verdicts = await page.$$eval(
        "#recent .verdict",
        (spans) => spans.map((s) => s.textContent),
      );
      assert.deepEqual(verdicts, ["ok", "ok"]);
      if (Deno.env.get("KILN_SCREENSHOTS")) {
        // A few status events, one a second, so the charts have a line to show.
        await page.waitForFunction(
          `(document.querySelector('${nodeCard("web-secondary")} .cpu .line')
          ?.getAttribute("points")?.split(" ").length ?? 0) >= 8`,
        );
        await screenshot(page, "dashboard.png");
      }
    } finally {
      await secondary.shutdown();
    }
    await page.waitForFunction(
      `document.querySelector('${nodeCard("web-secondary")}') === null`,
    );
    assert.ok(await page.$(nodeCard("web-master")));
    browser.assertClean();
  },
);

browserTest(
  "playground: a typed program runs and its output and verdict appear",
  async () => {
    await using cluster = await startCluster("web-master");
    await using browser = await openBrowser();
    const { page } = browser;
    await openPlayground(page, cluster.base);

    // Replace the sample with a program typed key by key.
    await page.click("#code");
    await page.keyboard.down("Control");
    await page.keyboard.press("a");
    await page.keyboard.up("Control");
    await page.keyboard.press("Backspace");
    await page.keyboard.type(
      'read name\necho "hello, $name, from $1"\necho "to stderr" >&2\n',
    );
    await page.waitForFunction(
      `document.querySelector("#highlight .tok-keyword")?.textContent === "read"`,
    );
    await page.type("#stdin", "browser\n");
    await page.type("#args", "kiln");

    // The only slot is taken: the program waits in the queue, and says so.
    const holding = new AbortController();
    const holderStarted = Promise.withResolvers<void>();
    const holder = cluster.master.run(
      {
        language: "bash",
        files: [{ name: "main.sh", content: "exec sleep 600" }],
      },
      {
        client: "holder",
        signal: holding.signal,
        onEvent: (event) => {
          if (event.type === "started") holderStarted.resolve();
        },
      },
    );
    await holderStarted.promise;
    try {
      await page.focus("#code");
      await page.keyboard.down("Control");
      await page.keyboard.press("Enter");
      await page.keyboard.up("Control");
      await page.waitForFunction(
        `document.querySelector("#status")?.textContent === "Queued at position 1."`,
      );
    } finally {
      holding.abort();
    }
    assert.notEqual((await holder.result).verdict, "ok");

    await page.waitForSelector("#facts:not([hidden]) #verdict .verdict");
    const verdict = await page.$eval(
      "#verdict",
      (element) => element.textContent,
    );
    assert.equal(verdict, "ok");
    const stdout = await page.$$eval(
      ".stream-stdout",
      (spans) => spans.map((s) => s.textContent).join(""),
    );
    const stderr = await page.$$eval(
      ".stream-stderr",
      (spans) => spans.map((s) => s.textContent).join(""),
    );
    assert.equal(stdout, "hello, browser, from kiln\n");
    assert.equal(stderr, "to stderr\n");
    assert.equal(
      await page.$eval("#node", (element) => element.textContent),
      "web-master",
    );
    assert.match(
      await page.$eval("#status", (element) => element.textContent ?? ""),
      /Finished: ok/,
    );
    await screenshot(page, "playground.png");
    browser.assertClean();
  },
);

browserTest(
  "dashboard: takes a token from the URL and shows the queue with positions",
  async () => {
    const token = "browser-test-token";
    await using cluster = await startCluster("web-master", token);
    await using browser = await openBrowser();
    const { page } = browser;
    await page.goto(`${cluster.base}/#token=${token}`);
    await page.waitForSelector('#connection[data-state="live"]');
    await page.waitForSelector(nodeCard("web-master"));
    assert.equal(await page.evaluate("location.hash"), "");

    // One slot: the first job holds it until cancelled, the second waits.
    const holding = new AbortController();
    const waiting = new AbortController();
    const first = cluster.master.run(
      {
        language: "bash",
        files: [{ name: "main.sh", content: "exec sleep 600" }],
      },
      { client: "holder", signal: holding.signal },
    );
    await page.waitForSelector(`#running tr[data-job-id="${first.jobId}"]`);
    const second = cluster.master.run(
      { language: "bash", files: [{ name: "main.sh", content: "echo next" }] },
      { client: "waiter", signal: waiting.signal },
    );
    // Its row may show before its position does: wait for both.
    const cells =
      `[...document.querySelectorAll('#queue tr[data-job-id="${second.jobId}"] td')]
      .map((td) => td.textContent)`;
    await page.waitForFunction(`${cells}[0] === "1"`);
    const [position, , client] = await page.evaluate(cells) as string[];
    assert.deepEqual([position, client], ["1", "waiter"]);

    holding.abort();
    assert.equal((await second.result).verdict, "ok");
    assert.notEqual((await first.result).verdict, "ok");
    await page.waitForSelector(
      `#recent tr[data-job-id="${second.jobId}"] .verdict-ok`,
    );
    await page.waitForSelector(`#queue tr.empty`);
    await page.waitForSelector(`#running tr.empty`);

    // A tab without the token is told so.
    const stranger = await browser.browser.newPage();
    await stranger.goto(`${cluster.base}/`);
    await stranger.waitForSelector('#connection[data-state="error"]');
    browser.assertClean();
  },
);

browserTest(
  "playground: output streams while the program runs, and Cancel stops it",
  async () => {
    await using cluster = await startCluster("web-master");
    await using browser = await openBrowser();
    const { page } = browser;
    await openPlayground(page, cluster.base, "echo started\nexec sleep 600\n");
    await page.click("#run");
    await page.waitForFunction(
      `document.querySelector(".stream-stdout")?.textContent === "started\\n"`,
    );
    assert.equal(
      await page.$eval("#status", (element) => element.textContent),
      "Running on web-master…",
    );
    await page.click("#cancel");
    await page.waitForSelector("#facts:not([hidden]) #verdict .verdict");
    const verdict = await page.$eval(
      "#verdict",
      (element) => element.textContent,
    );
    assert.notEqual(verdict, "ok");
    await page.waitForSelector("#run:not([disabled])");
    browser.assertClean();
  },
);

browserTest(
  "playground: an interactive program receives a line typed while it runs",
  async () => {
    await using cluster = await startCluster("web-master");
    await using browser = await openBrowser();
    const { page } = browser;
    await openPlayground(
      page,
      cluster.base,
      'echo "name?"\nread -r name\necho "hello $name"\ncat > /dev/null\necho bye\n',
    );
    await page.click("#interactive");
    await page.click("#run");
    const stdout =
      `[...document.querySelectorAll(".stream-stdout")].map((s) => s.textContent).join("")`;
    await page.waitForFunction(`${stdout} === "name?\\n"`);
    await page.waitForSelector("#live-input:not([disabled])");
    await page.type("#live-input", "kiln");
    await page.keyboard.press("Enter");
    await page.waitForFunction(`${stdout} === "name?\\nhello kiln\\n"`);
    await page.click("#end-input");
    await page.waitForSelector("#facts:not([hidden]) #verdict .verdict");
    assert.equal(
      await page.$eval("#verdict", (element) => element.textContent),
      "ok",
    );
    assert.equal(await page.evaluate(stdout), "name?\nhello kiln\nbye\n");
    assert.equal(
      await page.$eval(".stream-stdin", (element) => element.textContent),
      "kiln\n",
    );
    browser.assertClean();
  },
);
