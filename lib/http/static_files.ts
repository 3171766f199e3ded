/**
 * The dashboard and playground assets in `lib/web/`, served by plain file
 * name only: no directories, so no request can reach outside that folder.
 *
 * @module
 */

const WEB_ROOT = new URL("../web/", import.meta.url);

const CONTENT_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  ico: "image/x-icon",
  woff2: "font/woff2",
  map: "application/json; charset=utf-8",
  txt: "text/plain; charset=utf-8",
};

/** A file name with no separator and no leading dot (so no `..`, no dotfile). */
const PLAIN_NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/;

/** The file `name` of `lib/web/` as a response, or 404. */
export async function serveWebFile(name: string): Promise<Response> {
  const type = CONTENT_TYPES[name.split(".").pop() ?? ""];
  if (!PLAIN_NAME.test(name) || type === undefined) return notFound();
  try {
    const body = await Deno.readFile(new URL(name, WEB_ROOT));
    return new Response(body, {
      headers: { "content-type": type, "cache-control": "no-cache" },
    });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return notFound();
    throw error;
  }
}

function notFound(): Response {
  return Response.json({ error: "not found" }, { status: 404 });
}
