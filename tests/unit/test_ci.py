"""CI installs and tests exactly as the README tells a user to."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    block = re.search(r"```\n(python3 -m venv.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    readme = _readme_commands()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    install = next(c for c in readme if c.startswith("pip install"))
    assert install == 'pip install -e ".[dev]" -c constraints.txt'
    for cmd in (install, "python -m raybench.envcheck", "python -m pytest"):
        assert cmd in readme and cmd in ci, cmd
    assert ci.index(install) < ci.index("python -m raybench.envcheck") < ci.index("python -m pytest")
    # a new virtualenv in a temporary folder, activated before the install
    assert any(re.fullmatch(r'python3 -m venv "\$\w+/venv"', c) for c in ci)
    assert any(c.startswith(". ") and c.endswith('/venv/bin/activate"') for c in ci)
    assert any("mktemp -d" in c for c in ci)


def test_the_constraints_pin_what_pyproject_pins():
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    pyproject = (REPO / "pyproject.toml").read_text()
    for dist in ("torch", "torchaudio"):
        assert f'"{dist}=={pins[dist]}"' in pyproject, dist
    assert pins["decord"] == "0.6.0"
