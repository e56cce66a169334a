"""Train, evaluate and checkpoint a recommender.

    python scripts/train.py --config configs/demo.py --workdir runs/demo
    python scripts/train.py --config configs/ml100k.py --workdir runs/ml100k --config.train.num_epochs=50

Any config key can be overridden with --config.KEY=VALUE. Running the same command again
on the same workdir resumes from its latest checkpoint. For a multi-process run, start one
process per host (or per device group) with --coordinator_address, --num_processes and
--process_id (the arguments of jax.distributed.initialize).

A user error (a missing or unknown flag, a config file or key that does not exist, a bad
config value, bad data) ends in one line `error: ...` and exit status 2 (`--verbose` shows the
traceback); `--help` lists the flags. On SIGTERM (preemption) training saves a checkpoint at the
next step and exits with status 143; the same command resumes.
"""

from absl import app, flags
from ml_collections import config_flags

from graphrec_jax.cli import run_script, run_training
from graphrec_jax.cli_flags import absl_flags_parser
from graphrec_jax.host_memory import use_huge_pages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file with get_config().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory for checkpoints and logs.")
_SHOW_USERS = flags.DEFINE_integer("show_users", 3, "Print this many users' top-10 after training.", lower_bound=0)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_VERBOSE = flags.DEFINE_boolean("verbose", False, "Show the traceback of a user error.")
USAGE = "python scripts/train.py --config CONFIG --workdir DIR"


def main(argv):
    del argv  # the flags parser refuses positional arguments
    run_script(
        lambda: run_training(
            _CONFIG.value,
            _WORKDIR.value,
            show_users=_SHOW_USERS.value,
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        ),
        verbose=_VERBOSE.value,
    )


if __name__ == "__main__":
    use_huge_pages()  # before any work: re-executes with the malloc tunable
    app.run(main, flags_parser=absl_flags_parser(USAGE, required=["config", "workdir"], config_files=["config"]))
