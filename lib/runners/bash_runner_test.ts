import { BashRunner } from "./bash_runner.ts";
import { runRunnerConformance } from "./conformance.ts";

await runRunnerConformance(() => new BashRunner(), {
  hello: 'echo "Hello, world!"\n',
  echo: "cat\n",
  args: 'for arg in "$@"; do\n  printf "%s\\n" "$arg"\ndone\n',
  exit3: 'echo "exiting with 3" >&2\nexit 3\n',
  crash: 'set -u\necho "$undefined_variable"\necho "not reached"\n',
  multiFile: [
    { name: "main.sh", content: "source ./greet.sh\ngreet\n" },
    { name: "greet.sh", content: 'greet() {\n  echo "Hello, world!"\n}\n' },
  ],
});
