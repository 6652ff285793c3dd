"""Run a client script in a fresh Python process, as a user's training script runs."""

import os
import subprocess
import sys


def run_script(script, spool_dir):
    """Run `script` with its spool in `spool_dir`; assert it exits 0 and return the result."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CALLBOARD_SPOOL_DIR": str(spool_dir)},
    )
    assert done.returncode == 0, done.stderr
    return done
