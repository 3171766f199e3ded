import { createDefaultRegistry, executeJob } from "../mod.ts";
const registry = createDefaultRegistry();
const progs: Record<string, string> = {
  python: "import os;print('hi', os.getuid(), os.getpid())",
  c: '#include <stdio.h>\nint main(){printf("hi c\\n");}',
  cpp: '#include <iostream>\nint main(){std::cout<<"hi cpp\\n";}',
  java:
    'public class Main{public static void main(String[] a){System.out.println("hi java");}}',
  javascript: "console.log('hi js')",
  typescript: "const x: string = 'hi ts'; console.log(x)",
  rust: 'fn main(){println!("hi rust");}',
  bash: "echo hi bash $(id -u)",
};
for (const [lang, src] of Object.entries(progs)) {
  const r = await registry.resolve(lang);
  if (!r.ok) {
    console.log(lang, r.reason);
    continue;
  }
  const ext = r.resolved.runner.extensions[0];
  const t = performance.now();
  const res = await executeJob(r.resolved, {
    language: lang,
    files: [{ name: "main" + ext, content: src }],
  });
  console.log(
    lang,
    res.verdict,
    JSON.stringify(res.stdout),
    res.stderr.slice(0, 300),
    res.reason,
    res.cpuTimeMs,
    res.memoryKb,
    res.sandbox,
    Math.round(performance.now() - t),
    res.compile?.memoryKb,
  );
}
