/**
 * The stdin a client types into one interactive job
 * ({@linkcode JobInput}): read from the caller's iterable chunk by chunk,
 * sent on whichever connection the job is attached on now, held while it
 * has none, and kept (up to what a master accepts) so that a job submitted
 * again after its master was lost gets all of it from the start.
 *
 * @module
 */
import { utf8Bytes } from "./job.ts";
import { MAX_INPUT_BYTES } from "./scheduler/dispatcher.ts";

/**
 * Sends one chunk of stdin to the job over one connection. Resolves true
 * once written, false when that connection ended first (the chunk is sent
 * again after the job's next attach). Never rejects.
 */
export type StdinSender = (data: string, eof: boolean) => Promise<boolean>;

interface Chunk {
  readonly data: string;
  readonly eof: boolean;
}

/**
 * The stdin of one job. It reads the source only while what it read is
 * sent (the connection's pace sets the caller's), and only once the job is
 * first attached (accepted), as the program cannot read before.
 *
 * @example Feeding a job over whatever link it is on
 * ```ts ignore
 * const input = new JobInput(lines());
 * input.attach((data, eof) => link.sendStdin(jobId, data, eof), true);
 * input.detach(); // the link ended: chunks wait
 * input.attach(sendOnNewLink, false); // attached again: the rest follows
 * input.stop(); // the job ended
 * ```
 */
export class JobInput {
  readonly #source: AsyncIterable<string>;
  /**
   * Every chunk read so far, in order, EOF last: what a new run of the job
   * needs. At most {@linkcode MAX_INPUT_BYTES} of text, as a master keeps
   * no more of one job's stdin.
   */
  readonly #chunks: Chunk[] = [];
  #bytes = 0;
  /** Chunks written for the current run of the job: the next one to send. */
  #sent = 0;
  /** Counts runs: a write for an older run does not advance `#sent`. */
  #run = 0;
  /** Where chunks go now; none while the job's connection is down. */
  #send: StdinSender | undefined;
  #reading = false;
  #writing = false;
  #stopped = false;
  /** Resolved once every chunk read is written, or input stopped. */
  #caughtUp: PromiseWithResolvers<void> | undefined;

  constructor(source: AsyncIterable<string>) {
    this.#source = source;
  }

  /**
   * The job is attached on a connection: what is due is sent there.
   * `fresh` says the master runs the job afresh (a submit was accepted, the
   * first or again), so it needs every chunk again; otherwise the master
   * kept the job (an `attach` was accepted) and only the rest is sent.
   */
  attach(send: StdinSender, fresh: boolean): void {
    if (this.#stopped) return;
    if (fresh) {
      this.#run++;
      this.#sent = 0;
    }
    this.#send = send;
    if (!this.#reading) this.#read();
    this.#write();
  }

  /** The job's connection ended: chunks wait for the next {@linkcode attach}. */
  detach(): void {
    this.#send = undefined;
  }

  /**
   * The job ended: nothing more is sent, and the source's iterator is
   * returned as soon as it yields again.
   */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#send = undefined;
    this.#chunks.length = 0;
    this.#wake();
  }

  /** Reads the source, one chunk at a time once the last is written. Never rejects. */
  async #read(): Promise<void> {
    this.#reading = true;
    try {
      for await (const data of this.#source) {
        if (this.#stopped) return;
        if (data === "") continue; // carries nothing; the master drops it too
        this.#bytes += utf8Bytes(data);
        // A master ends stdin where it passes MAX_INPUT_BYTES (the program
        // sees EOF), so that chunk and the rest would be dropped anyway.
        const over = this.#bytes > MAX_INPUT_BYTES;
        this.#chunks.push(
          over ? { data: "", eof: true } : { data, eof: false },
        );
        this.#write();
        if (over) return;
        await this.#flushed();
        if (this.#stopped) return;
      }
    } catch {
      // The caller's input failed: its program gets EOF rather than wait
      // for stdin that will never come.
    }
    if (this.#stopped) return;
    this.#chunks.push({ data: "", eof: true });
    this.#write();
  }

  /** Sends what is due on the current connection, in order. Never rejects. */
  async #write(): Promise<void> {
    if (this.#writing) return;
    this.#writing = true;
    try {
      while (
        !this.#stopped && this.#send !== undefined &&
        this.#sent < this.#chunks.length
      ) {
        const send = this.#send;
        const run = this.#run;
        const index = this.#sent;
        const { data, eof } = this.#chunks[index]!;
        if (await send(data, eof)) {
          if (this.#run === run && this.#sent === index) this.#sent = index + 1;
        } else if (this.#send === send) this.#send = undefined;
      }
    } finally {
      this.#writing = false;
      if (this.#stopped || this.#sent >= this.#chunks.length) this.#wake();
    }
  }

  /** Settles once every chunk read so far is written, or input stopped. */
  #flushed(): Promise<void> {
    if (this.#stopped || this.#sent >= this.#chunks.length) {
      return Promise.resolve();
    }
    this.#caughtUp ??= Promise.withResolvers();
    return this.#caughtUp.promise;
  }

  #wake(): void {
    const caughtUp = this.#caughtUp;
    this.#caughtUp = undefined;
    caughtUp?.resolve();
  }
}
