import assert from "node:assert/strict";
import { join } from "node:path";
import {
  DEFAULT_UID_RANGE,
  IdentityPool,
  type IdentityPoolOptions,
  parseUidRange,
} from "./identity.ts";

const asRoot = Deno.uid() === 0 && Deno.build.os === "linux";

/** A range of its own per test process, far from the default first block. */
const BASE = DEFAULT_UID_RANGE.first + 65_536 * (4100 + Deno.pid % 3000);

/** Runs `fn` with a claims directory of its own, removed after. */
async function withDirectory(
  fn: (options: IdentityPoolOptions & { directory: string }) => Promise<void>,
): Promise<void> {
  const parent = await Deno.makeTempDir({ prefix: "kiln-identity-" });
  try {
    await fn({ directory: join(parent, "uid-blocks") });
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
}

Deno.test("parseUidRange() reads FIRST-LAST and names what is wrong", () => {
  assert.deepEqual(parseUidRange("1879048192-1879113727"), {
    first: 1879048192,
    last: 1879113727,
  });
  assert.deepEqual(parseUidRange(" 5 - 5 "), { first: 5, last: 5 });
  assert.throws(() => parseUidRange("1000"), /is not FIRST-LAST/);
  assert.throws(() => parseUidRange("0-10"), /between 1 and 4294967294/);
  assert.throws(() => parseUidRange("1-4294967295"), /between 1 and/);
  assert.throws(() => parseUidRange("10-5"), /ends before it starts/);
  assert.throws(() => parseUidRange("1-99999999999"), /is not FIRST-LAST/);
});

Deno.test({
  name:
    "two pools never share a block, and a block a dead process claimed is taken over",
  ignore: !asRoot,
  fn: () =>
    withDirectory(async (options) => {
      const range = { first: BASE, last: BASE + 3 };
      const a = await IdentityPool.claim({ ...options, range, blockSize: 2 });
      const b = await IdentityPool.claim({ ...options, range, blockSize: 2 });
      assert.deepEqual(a.block, { first: BASE, last: BASE + 1 });
      assert.deepEqual(b.block, { first: BASE + 2, last: BASE + 3 });
      await assert.rejects(
        IdentityPool.claim({ ...options, range, blockSize: 2 }),
        /no block of 2 uids in .* is free: 2 are claimed/,
      );
      await a.close();
      // A claim whose process is gone: a pid that lived and was reaped.
      const gone = new Deno.Command("/bin/true").spawn();
      await gone.status;
      await Deno.writeTextFile(
        join(options.directory, `${gone.pid}-stale`),
        JSON.stringify({ pid: gone.pid, start: "1", first: BASE, last: BASE }),
      );
      const c = await IdentityPool.claim({ ...options, range, blockSize: 2 });
      assert.deepEqual(c.block, { first: BASE, last: BASE + 1 });
      const names = [...Deno.readDirSync(options.directory)].map((e) => e.name);
      assert.ok(!names.includes(`${gone.pid}-stale`), "the stale claim stays");
      await b.close();
      await c.close();
    }),
});

Deno.test({
  name: "a block never holds an id of a host account",
  ignore: !asRoot,
  fn: () =>
    withDirectory(async (options) => {
      // 65534 is nobody (and nogroup) on every Debian.
      const pool = await IdentityPool.claim({
        ...options,
        range: { first: 65530, last: 65540 },
        blockSize: 5,
      });
      assert.deepEqual(pool.block, { first: 65535, last: 65539 });
      await pool.close();
    }),
});

Deno.test({
  name:
    "a uid is leased to one job at a time, and a uid some process still runs as is quarantined",
  ignore: !asRoot,
  fn: () =>
    withDirectory(async (options) => {
      const pool = await IdentityPool.claim({
        ...options,
        range: { first: BASE + 8, last: BASE + 9 },
      });
      // Something runs as the first uid: the pool must not lease it.
      const squatter = new Deno.Command("/usr/bin/setpriv", {
        args: [
          `--reuid=${BASE + 8}`,
          `--regid=${BASE + 8}`,
          "--clear-groups",
          "/bin/sh",
          "-c",
          "echo up; exec cat",
        ],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      const reader = squatter.stdout.getReader();
      await reader.read();
      try {
        const first = await pool.acquire();
        assert.equal(first.uid, BASE + 9);
        assert.equal(first.gid, BASE + 9);
        assert.equal(pool.quarantined, 1);
        await assert.rejects(pool.acquire(), /no uid left for a job/);
        await pool.release(first);
        assert.deepEqual(await pool.acquire(), first);
        assert.equal(pool.leased, 1);
      } finally {
        await squatter.stdin.close();
        await squatter.status;
        reader.releaseLock();
        await squatter.stdout.cancel();
        await pool.close();
      }
    }),
});

Deno.test({
  name:
    "without a keyring clear, a uid is reused only when the block has no unused one",
  ignore: !asRoot,
  fn: () =>
    withDirectory(async (options) => {
      const pool = await IdentityPool.claim({
        ...options,
        range: { first: BASE + 12, last: BASE + 13 },
        perlPath: "/nonexistent/perl",
      });
      assert.equal(pool.clearsKeyrings, false);
      const uids: number[] = [];
      for (let i = 0; i < 3; i++) {
        const identity = await pool.acquire();
        uids.push(identity.uid);
        await pool.release(identity);
      }
      assert.deepEqual(uids, [BASE + 12, BASE + 13, BASE + 12]);
      await pool.close();
    }),
});

Deno.test({
  name: "a closed pool gives its block back and leases nothing",
  ignore: !asRoot,
  fn: () =>
    withDirectory(async (options) => {
      const range = { first: BASE + 16, last: BASE + 16 };
      const pool = await IdentityPool.claim({ ...options, range });
      await pool.close();
      await assert.rejects(pool.acquire(), /the uid pool is closed/);
      const again = await IdentityPool.claim({ ...options, range });
      assert.deepEqual(again.block, range);
      await again.close();
    }),
});

Deno.test({
  name:
    "a job that could not touch a keyring (seccomp) is released without the clearing process",
  ignore: !asRoot,
  fn: () =>
    withDirectory(async (options) => {
      // A stand-in for perl that counts its runs; it runs as the job's uid,
      // so its directory and its count are open to every user.
      const bin = await Deno.makeTempDir({ prefix: "kiln-fake-perl-" });
      try {
        await Deno.chmod(bin, 0o755);
        const calls = join(bin, "calls");
        await Deno.writeTextFile(calls, "", { mode: 0o666 });
        await Deno.chmod(calls, 0o666);
        const perl = join(bin, "perl");
        await Deno.writeTextFile(
          perl,
          `#!/bin/sh\necho run >> ${calls}\nexit 0\n`,
        );
        await Deno.chmod(perl, 0o755);
        const runs = async () =>
          (await Deno.readTextFile(calls)).split("\n").filter(Boolean).length;

        const pool = await IdentityPool.claim({
          ...options,
          range: { first: BASE + 20, last: BASE + 21 },
          perlPath: perl,
        });
        try {
          // A fresh uid is cleared before its first lease.
          const identity = await pool.acquire();
          assert.equal(await runs(), 1);
          await pool.release(identity, { keyringsUntouched: true });
          assert.equal(await runs(), 1);
          // Back in the pool at once, and cleared when a job might have.
          assert.deepEqual(await pool.acquire(), identity);
          await pool.release(identity);
          assert.equal(await runs(), 2);
          assert.equal(pool.quarantined, 0);
        } finally {
          await pool.close();
        }
      } finally {
        await Deno.remove(bin, { recursive: true });
      }
    }),
});

Deno.test({
  name:
    "a released uid a process still runs as is quarantined, unless the caller vouches every process ended",
  ignore: !asRoot,
  fn: () =>
    withDirectory(async (options) => {
      const pool = await IdentityPool.claim({
        ...options,
        range: { first: BASE + 24, last: BASE + 25 },
        perlPath: "/nonexistent/perl",
      });
      const first = await pool.acquire();
      const second = await pool.acquire();
      // What a job left running as each uid, outside any cgroup.
      const squatters = [first, second].map(({ uid }) =>
        new Deno.Command("/usr/bin/setpriv", {
          args: [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "cat"],
          stdin: "piped",
          stdout: "null",
        }).spawn()
      );
      try {
        // Set up before any check: the walk cannot miss them.
        for (const squatter of squatters) {
          for (let i = 0; i < 200; i++) {
            const status = await Deno.readTextFile(
              `/proc/${squatter.pid}/status`,
            );
            if (/^Uid:\s+(\d+)/m.exec(status)?.[1] !== "0") break;
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        }
        await pool.release(first);
        assert.equal(pool.quarantined, 1);
        // The caller's word replaces the walk: it must be what it saw (the
        // sandbox vouches only when every step's cgroup was removed).
        await pool.release(second, { processesGone: true });
        assert.equal(pool.quarantined, 1);
        assert.deepEqual(await pool.acquire(), second);
      } finally {
        for (const squatter of squatters) {
          await squatter.stdin.close();
          await squatter.status;
        }
        await pool.close();
      }
    }),
});
