"""``auditor-rt serve`` with a slow fake model: every model call takes DELAY_MS longer than the tiny test model.
The load, queue, deadline and drain tests need a model that is busy long enough to measure; serve itself has no
test-only option for it. Usage: python slow_serve.py DELAY_MS serve ARTIFACT [options]."""

from __future__ import annotations

import sys
import time

from auditor_rt.runtime.auditor import RiskAuditor


def slow_model(delay_s: float) -> None:
    """Every ``run_batch`` of a risk head (warm-up included) sleeps ``delay_s`` after the real inference."""
    run_batch = RiskAuditor.run_batch

    def slow_run_batch(self, batch):
        outputs = run_batch(self, batch)
        time.sleep(delay_s)
        return outputs

    RiskAuditor.run_batch = slow_run_batch


if __name__ == "__main__":
    slow_model(float(sys.argv.pop(1)) / 1000)
    from auditor_rt.cli.main import cli

    cli()
