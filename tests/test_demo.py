"""The `make demo` script runs end to end (small sizes, so it cannot rot)."""

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


def test_demo_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(DEMO), "--workdir", str(tmp_path), "--voters", "3000", "--list-size", "400"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "bundles verified" in done.stdout
    assert all((tmp_path / "orgs" / org / "bundle" / "manifest.json").is_file()
               for org in ("county-voter-file", "riverside-tenants-union"))
