"""The README's Python example runs against the installed package and prints what the README
says it prints, so the first Python a newcomer copies cannot rot unnoticed. Needs the package
installed (`pip install ./transport/python`)."""

import os
import subprocess
import sys

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "README.md")
# The comment line the README puts right above the block; the block is found by it, not by
# position, so sections can move around it.
MARKER = "<!-- transport/python/tests/test_readme.py runs the next block"


def readme_example() -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert MARKER in text, f"README.md has lost the line marking its Python example: {MARKER!r}"
    lines = text.split(MARKER, 1)[1].split("\n")[1:]
    assert lines[0] == "```python", "the marker must be followed by a ```python block"
    block = lines[1 : lines.index("```")]
    return "\n".join(block) + "\n"


def test_the_readme_python_example_prints_what_it_says(tmp_path):
    code = readme_example()
    # The last line's comment is the output the README promises.
    expected = code.rstrip("\n").rsplit("\n", 1)[1].rsplit("#", 1)[1].strip()
    # A fresh interpreter in an empty directory, as a reader would run it: only the installed
    # package can be imported, and nothing this test module set up leaks into the example.
    script = tmp_path / "readme_example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
