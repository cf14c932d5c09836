"""Launch the runs of one of the papers' tables (a suite), skipping finished ones, then write its leaderboard.

    python tools/reproduce.py --list
    python tools/reproduce.py fashion-mnist-batch-sizes                      # the CPU suite, here
    python tools/reproduce.py coco-mask-rcnn-2x --launcher torchrun          # one 8-GPU machine
    python tools/reproduce.py cityscapes-deeplab --launcher slurm --partition gpu
    python tools/reproduce.py imagenet-r50-batch-sizes --data /data/imagenet --norms SN SSN --dry-run

`--dry-run` prints each run's next command and every data root or weights file those commands would read and
cannot find (exit status 1 when one is missing); a launch checks the same first and starts nothing if one is.

Each run writes to WORK_DIR/SUITE/RUN (default WORK_DIR: work_dirs/reproduce). A run whose folder holds a
finished result is skipped; an interrupted one is started again with its tool's resume flag; the
segmentation suites then run mmseg's multi-scale flip test (`tools/mm_test.py --tta`), the Kinetics suites the
10-clip test (`tools/mm_test.py`). At the end the
suite's leaderboard goes to WORK_DIR/SUITE/leaderboard.{md,html}. `--launcher slurm` submits one
submitit job per unfinished run (`--slurm-cluster local` runs them with submitit's local executor
here, to check a suite before a cluster) and waits for them; a re-run does not submit again a run whose job is
still queued or running. Each run folder gets a run record (`run_record.json`): the suite, the paper figure it
is compared with, and what its tool really ran (GPUs x images per GPU, pretrained weights, config, commit).
`--ci` runs the CI-sized variant: on the CPU suites a small run here, on the GPU suites the same data and launch
with a few iterations and a slice of the evaluation set (to check a cluster's path in minutes).
"""
import sys
from pathlib import Path

from ssn_plugins.cli import jobs_root, tool_parser
from ssn_plugins.cli.leaderboard import collect_rows, render
from ssn_plugins.names import choice_argument
from ssn_plugins.reproduction.launch import SlurmOptions, run_one, submit_slurm
from ssn_plugins.reproduction.preflight import missing_inputs
from ssn_plugins.reproduction.suites import SUITES, get_suite, plan, shell_line


def main(argv=None):
    parser = tool_parser(__doc__, "reproduce")
    parser.add_argument("suite", nargs="?", type=choice_argument(sorted(SUITES), "suite"),
                        help=f"one of {', '.join(sorted(SUITES))}")
    parser.add_argument("--list", action="store_true", help="list the suites and their runs")
    parser.add_argument("--norms", nargs="+", help="only these runs (norm or run names)")
    parser.add_argument("--launcher", choices=("local", "torchrun", "slurm"), default="local")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/reproduce"))
    parser.add_argument("--data", type=Path, help="data set root, for the suites that need one (ImageNet)")
    parser.add_argument("--ci", action="store_true",
                        help="the suite's CI-sized variant (few iterations; GPU suites: a slice of the same data)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    parser.add_argument("--allow-setting-change", action="store_true",
                        help="with --launcher local, run multi-GPU runs in one process anyway (not the papers' batch "
                             "setting)")
    slurm = parser.add_argument_group("Slurm (--launcher slurm)")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument("--account", help="Slurm account")
    slurm.add_argument("--qos", help="Slurm quality of service")
    slurm.add_argument("--mem", help="memory per node, in Slurm's notation (400G)")
    slurm.add_argument("--time", type=int, default=4320, help="time limit per job in minutes (default 72 h)")
    slurm.add_argument("--gpus-per-node", type=int, default=8, help="at most this many GPUs per job (default 8)")
    slurm.add_argument("--cpus-per-gpu", type=int, default=10, help="CPUs per GPU (default 10)")
    slurm.add_argument("--slurm-cluster", choices=("slurm", "local"), default=None,
                       help="submitit executor: Slurm (needs sbatch here), or its local executor to check a suite")
    args = parser.parse_args(argv)
    if args.list:
        for name in SUITES:
            suite = get_suite(name)
            print(f"{name}: {suite.description}\n  runs: {', '.join(r.name for r in suite.runs)}")
        return 0
    if args.suite is None:
        parser.error("name a suite (or --list)")
    suite = get_suite(args.suite, args.ci)
    work_dir = (args.work_dir / suite.name).resolve()
    root = jobs_root()
    try:
        planned = plan(suite, work_dir, root, args.launcher, args.data, args.norms)
    except ValueError as e:
        parser.error(str(e))
    if not planned:
        parser.error(f"--norms {' '.join(args.norms)} matches no run of {suite.name}")
    for p in planned:
        line = "nothing to do" if not p.commands else shell_line(p.commands[0])
        print(f"{p.run.name}: {p.state}: {line}")
    missing = missing_inputs(planned, root, args.data)
    for line in missing:
        print(f"missing: {line}", file=sys.stderr)
    if args.dry_run:
        return 1 if missing else 0
    multi_gpu = sorted({p.run.gpus for p in planned if p.commands and p.run.gpus > 1})
    if args.launcher == "local" and multi_gpu and not args.allow_setting_change:
        parser.error(f"{suite.name}'s runs use {'/'.join(map(str, multi_gpu))} GPUs, the papers' setting; "
                     f"--launcher local would run each in one process, another batch setting than the figures it is "
                     f"compared with. Use --launcher torchrun (this machine's GPUs) or --launcher slurm, or pass "
                     f"--allow-setting-change to run them anyway")
    if missing:
        parser.error(f"{len(missing)} input(s) the runs read do not exist (listed above); nothing was started")
    failures = []
    if args.launcher == "slurm":
        options = SlurmOptions(args.partition, args.account, args.qos, args.mem, args.time, args.gpus_per_node,
                               args.cpus_per_gpu)
        try:
            jobs = submit_slurm(planned, suite.name, args.ci, work_dir, root, args.data, args.slurm_cluster, options)
        except RuntimeError as e:  # no Slurm here
            parser.error(str(e))
        for job in jobs:
            print(f"submitted {job.job_id}")
        for job in jobs:
            try:
                job.result()
            except Exception as e:  # submitit re-raises the job's error with its traceback
                failures.append(f"job {job.job_id}: {e}")
    else:
        for p in planned:
            if not p.commands:
                continue
            try:
                run_one(suite.name, args.ci, p.run.name, str(work_dir), str(root), args.launcher,
                        str(args.data) if args.data else None)
            except RuntimeError as e:
                failures.append(str(e))
                print(f"failed: {e}", file=sys.stderr)
    rows = collect_rows([work_dir])
    for fmt in ("md", "html"):
        render(rows, [work_dir], fmt, output=work_dir / f"leaderboard.{fmt}")
    print(f"leaderboard: {work_dir / 'leaderboard.md'} and .html")
    if failures:
        print("\n".join(["failed runs:", *failures]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
