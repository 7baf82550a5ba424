"""The README's Python example runs, and its two commands are the ones .ci/run executes."""
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    assert blocks
    for b in blocks:
        exec(compile(b, "README.md", "exec"), {})


def test_ci_runs_the_readme_test_command():
    cmds = re.findall(r"```bash\n(.*?)\n```", _readme(), re.S)
    assert cmds == ['pip install -e ".[dev]" && python -m refquant demo', 'pip install -e ".[dev]" && python -m pytest']
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert cmds[1] in f.read()
