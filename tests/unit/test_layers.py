"""The layer rules in pyproject.toml's import-linter contracts hold (data knows no model or loop, a
model knows no loop, the loop knows no CLI or tracking backend, config knows no data code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "5 kept" in r.stdout


def test_a_config_check_imports_no_data_model_or_training_code():
    """Registries are filled lazily: loading a config module imports none of the code it names."""
    code = ("import sys; import raybench.config, raybench.schema, raybench.registry; "
            "print(sorted(m for m in sys.modules if m.startswith(('raybench.data', 'raybench.methods', "
            "'raybench.nn', 'raybench.train', 'torch', 'ray.'))))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
