"""Start train.py exactly as `wandb agent` does, with wandb's own code: `wandb.wandb_agent.Agent` builds the
command (the sweep YAML's `command`, its ${env} ${interpreter} ${program} ${args_no_hyphens} macros) and the
environment (WANDB_RUN_ID, WANDB_SWEEP_PARAM_PATH and the parameter file) and starts the process.

    python tests/agent_run.py SWEEP_YAML RUN_ID ARGS_JSON [run|resume] [--stop-after-epochs N]

Only the W&B server is left out: `Agent.run()` would fetch the sweep's YAML and receive this command from
it. So this script sets what `Agent.run()` sets from the YAML (`_sweep_command`) and hands the agent the
command the server sends (`_process_command`): private names of wandb's Agent, used here alone, because
no public API starts a sweep run without a server. WANDB_SWEEP_ID, WANDB_PROJECT and WANDB_ENTITY come
from the environment, where `wandb agent` (run_agent) puts them. Prints the run's exit code; with
--stop-after-epochs, SIGTERMs the run (the agent's `stop` command) once its history.csv holds N epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml
from wandb.wandb_agent import Agent


def run_dir(run_id: str) -> Path:
    """Where the sweeps/ command puts the run (its hydra.run.dir)."""
    return Path(os.environ.get("NIN_OUTPUT_DIR", "outputs")) / "wandb_sweeps" / os.environ["WANDB_SWEEP_ID"] / run_id


def epochs_done(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep_yaml", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("args_json")
    parser.add_argument("kind", nargs="?", default="run", choices=["run", "resume"])
    parser.add_argument("--stop-after-epochs", type=int)
    args = parser.parse_args()
    sweep = yaml.safe_load(args.sweep_yaml.read_text())
    agent = Agent(api=None, queue=None, sweep_id=os.environ["WANDB_SWEEP_ID"])
    agent._sweep_command = sweep["command"]  # as Agent.run() takes it from the sweep's config
    command = {"type": args.kind, "run_id": args.run_id, "program": sweep["program"],
               "args": {key: {"value": value} for key, value in json.loads(args.args_json).items()}}
    response = agent._process_command(command)
    if response.get("exception"):
        print(response, file=sys.stderr)
        return 3
    process = agent._run_processes[args.run_id]
    if args.stop_after_epochs:
        history = run_dir(args.run_id) / "history.csv"
        while process.poll() is None and epochs_done(history) < args.stop_after_epochs:
            time.sleep(0.2)
        process.terminate()  # SIGTERM, as the agent's `stop` command (and Slurm's preemption) sends
    print(json.dumps({"exit_code": process.wait()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
