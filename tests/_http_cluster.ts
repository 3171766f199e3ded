/**
 * A master with its HTTP API on loopback, port 0, for the HTTP tests: one
 * place to start and dispose of both.
 *
 * @module
 */
import {
  HttpApi,
  type HttpApiOptions,
  type JobRequest,
  MasterNode,
  type MasterNodeOptions,
} from "../mod.ts";

/** A running master and its API; disposing shuts both down. */
export interface HttpCluster extends AsyncDisposable {
  master: MasterNode;
  api: HttpApi;
  /** The API's port. */
  port: number;
  /** `http://127.0.0.1:<port>`. */
  base: string;
}

/** Starts a master (2 slots, no resource log unless told) and its HTTP API. */
export function startHttpCluster(
  masterOptions: MasterNodeOptions = {},
  apiOptions: HttpApiOptions = {},
): HttpCluster {
  const master = new MasterNode({
    port: 0,
    slots: 2,
    resourceLogIntervalMs: 0,
    ...masterOptions,
  });
  const api = new HttpApi(master, { port: 0, ...apiOptions });
  return {
    master,
    api,
    port: api.addr.port,
    base: `http://127.0.0.1:${api.addr.port}`,
    async [Symbol.asyncDispose]() {
      await api.shutdown();
      await master.shutdown();
    },
  };
}

/** A one-file bash job. */
export function bash(script: string): JobRequest {
  return { language: "bash", files: [{ name: "main.sh", content: script }] };
}
