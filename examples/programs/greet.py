# Reads names from stdin, one per line, and greets each.
import sys

for name in sys.stdin:
    name = name.strip()
    if name:
        print(f"Hello, {name}!")
