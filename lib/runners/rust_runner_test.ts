import { runRunnerConformance } from "./conformance.ts";
import { RustRunner } from "./rust_runner.ts";

await runRunnerConformance(() => new RustRunner(), {
  hello: 'fn main() {\n    println!("Hello, world!");\n}\n',
  echo:
    "use std::io::Read;\n\nfn main() {\n    let mut input = String::new();\n" +
    '    std::io::stdin().read_to_string(&mut input).unwrap();\n    print!("{input}");\n}\n',
  args:
    'fn main() {\n    for arg in std::env::args().skip(1) {\n        println!("{arg}");\n    }\n}\n',
  exit3:
    'fn main() {\n    eprintln!("exiting with 3");\n    std::process::exit(3);\n}\n',
  crash:
    'fn main() {\n    let v: Vec<i32> = Vec::new();\n    println!("{}", v[1]);\n}\n',
  compileError: 'fn main() {\n    let x: i32 = "not a number";\n}\n',
  multiFile: [
    {
      name: "main.rs",
      content: "mod greet;\n\nfn main() {\n    greet::greet();\n}\n",
    },
    {
      name: "greet.rs",
      content: 'pub fn greet() {\n    println!("Hello, world!");\n}\n',
    },
  ],
});
