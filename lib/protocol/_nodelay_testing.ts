/**
 * Reads `TCP_NODELAY` off this process's real sockets, for tests: Deno has
 * no `getsockopt`, so the socket's descriptor is found through
 * `/proc/self/fd` (its inode) and `/proc/self/net/tcp{,6}` (its ports), and
 * libc's `getsockopt(2)` is called on it. Linux only; needs `-A` (FFI and
 * `/proc`). Not a timed assertion: it reads the option the kernel holds.
 *
 * @module
 */

/** One established TCP socket of this process, and its Nagle setting. */
export interface SocketNoDelay {
  /** Local port. */
  local: number;
  /** Remote port. */
  remote: number;
  /** `TCP_NODELAY` is set: Nagle is off. */
  noDelay: boolean;
}

const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const TCP_ESTABLISHED = "01";

/**
 * Every established TCP socket this process holds with `port` at either
 * end, with its `TCP_NODELAY` read from the kernel.
 */
export function socketsOnPort(port: number): SocketNoDelay[] {
  const descriptors = socketDescriptors();
  const found: SocketNoDelay[] = [];
  const libc = Deno.dlopen("libc.so.6", {
    getsockopt: {
      parameters: ["i32", "i32", "i32", "buffer", "buffer"],
      result: "i32",
    },
  });
  try {
    collect(libc, descriptors, port, found);
  } finally {
    libc.close();
  }
  return found;
}

function collect(
  libc: Deno.DynamicLibrary<{
    getsockopt: {
      parameters: ["i32", "i32", "i32", "buffer", "buffer"];
      result: "i32";
    };
  }>,
  descriptors: Map<string, number>,
  port: number,
  found: SocketNoDelay[],
): void {
  for (const table of ["/proc/self/net/tcp", "/proc/self/net/tcp6"]) {
    const lines = Deno.readTextFileSync(table).split("\n").slice(1);
    for (const line of lines) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10 || fields[3] !== TCP_ESTABLISHED) continue;
      const local = portOf(fields[1]!);
      const remote = portOf(fields[2]!);
      if (local !== port && remote !== port) continue;
      const fd = descriptors.get(fields[9]!);
      if (fd === undefined) continue; // another process's end
      const value = new Int32Array(1);
      const length = new Uint32Array([4]);
      const failed = libc.symbols.getsockopt(
        fd,
        IPPROTO_TCP,
        TCP_NODELAY,
        value,
        length,
      );
      if (failed !== 0) throw new Error(`getsockopt failed on fd ${fd}`);
      found.push({ local, remote, noDelay: value[0] !== 0 });
    }
  }
}

/** Socket inode -> descriptor, for this process. */
function socketDescriptors(): Map<string, number> {
  const byInode = new Map<string, number>();
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
    } catch {
      continue; // closed since the listing
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode !== undefined) byInode.set(inode, Number(entry.name));
  }
  return byInode;
}

/** `0100007F:1F90` -> 8080. */
function portOf(address: string): number {
  return parseInt(address.slice(address.lastIndexOf(":") + 1), 16);
}
