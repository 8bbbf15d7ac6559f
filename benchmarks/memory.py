"""Memory over a long run: `stagerl train` of the GoToObj example with an endless step budget
for `--minutes`, its process tree's PSS sampled every second; prints the peak of the first
minute, the peak of the whole run and their ratio (flat memory: within 1.10).

    python benchmarks/memory.py [--minutes 30]
"""

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import GOTOOBJ, ROOT, _variant, tree_pss_mib

ENDLESS = """    @classmethod
    def training_pipeline(cls, **kwargs):
        pipeline = super().training_pipeline(**kwargs)
        for stage in pipeline.pipeline_stages:
            stage.max_stage_steps = 10**12
        return pipeline
"""


def main() -> None:
    """The command line the module's docstring describes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as output:
        config = _variant(GOTOOBJ, output, ENDLESS)
        command = [sys.executable, "-m", "stagerl", "train", str(config), "-o", output]
        log = (Path(output) / "stderr.log").open("w+")  # a pipe would fill and stall the run
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        start, samples = time.monotonic(), []
        while time.monotonic() - start < args.minutes * 60 and process.poll() is None:
            samples.append((time.monotonic() - start, tree_pss_mib(process.pid)))
            time.sleep(1.0)
        if process.poll() is not None:
            log.seek(0)
            sys.exit(f"training ended early:\n{log.read()[-3000:]}")
        process.send_signal(signal.SIGINT)  # saves a checkpoint and stops its workers
        process.wait(timeout=120)
        steps = max(
            int(p.stem.split("_")[1]) for p in Path(output).glob("*/*/checkpoints/ckpt_*.pt")
        )
    first = max(pss for t, pss in samples if t <= 60)
    whole = max(pss for _, pss in samples)
    print(f"{steps:,} steps in {args.minutes:g} min; peak PSS: first minute {first:.0f} MiB, "
          f"whole run {whole:.0f} MiB, ratio {whole / first:.3f} (flat: <= 1.10)")  # fmt: skip


if __name__ == "__main__":
    main()
