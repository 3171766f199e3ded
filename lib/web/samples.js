// A sample program per language: prints a greeting, each argument, and the
// lines read from standard input.

/** Per language: the entry file's name and its content. */
export const SAMPLES = {
  python: {
    name: "main.py",
    content: `import sys

# Greets each argument, then echoes standard input in upper case.
for name in sys.argv[1:] or ["world"]:
    print(f"hello, {name}")

for number, line in enumerate(sys.stdin, start=1):
    print(number, line.rstrip().upper())
`,
  },
  javascript: {
    name: "main.js",
    content: `// Greets each argument, then counts the words of standard input.
const names = Deno.args.length ? Deno.args : ["world"];
for (const name of names) console.log(\`hello, \${name}\`);

const input = await new Response(Deno.stdin.readable).text();
const words = input.split(/\\s+/).filter(Boolean);
console.log("words on stdin:", words.length);
`,
  },
  typescript: {
    name: "main.ts",
    content: `// Greets each argument, then counts the words of standard input.
function greet(name: string): string {
  return \`hello, \${name}\`;
}

const names: string[] = Deno.args.length ? Deno.args : ["world"];
names.map(greet).forEach((line) => console.log(line));

const input = await new Response(Deno.stdin.readable).text();
console.log("words on stdin:", input.split(/\\s+/).filter(Boolean).length);
`,
  },
  bash: {
    name: "main.sh",
    content: `# Greets each argument, then numbers the lines of standard input.
for name in "\${@:-world}"; do
  echo "hello, $name"
done

n=0
while read -r line; do
  n=$((n + 1))
  echo "$n: $line"
done
`,
  },
  c: {
    name: "main.c",
    content: `#include <stdio.h>

/* Greets each argument, then sums the numbers on standard input. */
int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) printf("hello, %s\\n", argv[i]);
  if (argc == 1) printf("hello, world\\n");
  long sum = 0, x;
  while (scanf("%ld", &x) == 1) sum += x;
  printf("sum of stdin: %ld\\n", sum);
  return 0;
}
`,
  },
  cpp: {
    name: "main.cpp",
    content: `#include <iostream>
#include <string>

// Greets each argument, then echoes the lines of standard input reversed.
int main(int argc, char** argv) {
  for (int i = 1; i < argc; i++) std::cout << "hello, " << argv[i] << "\\n";
  if (argc == 1) std::cout << "hello, world\\n";
  std::string line;
  while (std::getline(std::cin, line)) {
    std::cout << std::string(line.rbegin(), line.rend()) << "\\n";
  }
  return 0;
}
`,
  },
  java: {
    name: "Main.java",
    content: `import java.util.Scanner;

// Greets each argument, then counts the lines of standard input.
public class Main {
  public static void main(String[] args) {
    for (String name : args) System.out.println("hello, " + name);
    if (args.length == 0) System.out.println("hello, world");
    Scanner in = new Scanner(System.in);
    int lines = 0;
    while (in.hasNextLine()) {
      in.nextLine();
      lines++;
    }
    System.out.println("lines on stdin: " + lines);
  }
}
`,
  },
  rust: {
    name: "main.rs",
    content: `use std::io::{self, BufRead};

// Greets each argument, then prints the longest line of standard input.
fn main() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        println!("hello, world");
    }
    for name in &names {
        println!("hello, {}", name);
    }
    let longest = io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .max_by_key(|line| line.len())
        .unwrap_or_default();
    println!("longest line: {:?}", longest);
}
`,
  },
};

const EXTENSIONS = {
  python: "py",
  javascript: "js",
  typescript: "ts",
  bash: "sh",
  c: "c",
  cpp: "cpp",
  java: "java",
  rust: "rs",
};

/** The sample of `language` (or of one of its aliases), or a stub. */
export function sampleFor(language, aliases = []) {
  for (const name of [language, ...aliases]) {
    if (SAMPLES[name]) return SAMPLES[name];
  }
  return { name: `main.${EXTENSIONS[language] ?? "txt"}`, content: "" };
}

/** The entry file name for `language`, as the sample uses. */
export function fileNameFor(language, aliases = []) {
  return sampleFor(language, aliases).name;
}
