import { runRunnerConformance } from "./conformance.ts";
import { CppRunner } from "./cpp_runner.ts";

await runRunnerConformance(() => new CppRunner(), {
  hello:
    '#include <iostream>\n\nint main() {\n  std::cout << "Hello, world!\\n";\n}\n',
  echo:
    "#include <iostream>\n\nint main() {\n  std::cout << std::cin.rdbuf();\n}\n",
  args: "#include <iostream>\n\nint main(int argc, char** argv) {\n" +
    '  for (int i = 1; i < argc; ++i) std::cout << argv[i] << "\\n";\n}\n',
  exit3:
    '#include <iostream>\n\nint main() {\n  std::cerr << "exiting with 3\\n";\n  return 3;\n}\n',
  crash:
    '#include <stdexcept>\n\nint main() {\n  throw std::runtime_error("boom");\n}\n',
  compileError: "int main() {\n  std::string s = 42;\n}\n",
  multiFile: [
    {
      name: "main.cpp",
      content: '#include "greet.hpp"\n\nint main() {\n  greet();\n}\n',
    },
    { name: "greet.hpp", content: "#pragma once\nvoid greet();\n" },
    {
      name: "greet.cc",
      content:
        '#include <iostream>\n#include "greet.hpp"\n\nvoid greet() {\n  std::cout << "Hello, world!\\n";\n}\n',
    },
  ],
});
