"""Running a suite's runs: one after another here (``local`` / ``torchrun``), or as Slurm jobs through submitit."""
import subprocess
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .suites import Planned, get_suite, plan, shell_line


def run_one(suite_name: str, ci: bool, run_name: str, work_dir: str, repo: str, launcher: str,
            data: Optional[str] = None, echo: Callable[[str], None] = print) -> str:
    """Bring one run of a suite to its end: launch what its folder still needs, re-reading it after each step.

    Returns the final state ("finished"); raises ``RuntimeError`` naming the command that failed. Module-level
    so that submitit can pickle it for a Slurm job.
    """
    suite = get_suite(suite_name, ci)
    work, root = Path(work_dir), Path(repo)
    attempted = set()
    while True:
        (planned,) = [p for p in plan(suite, work, root, launcher, Path(data) if data else None)
                      if p.run.name == run_name]
        if not planned.commands:
            return planned.state
        command = planned.commands[0]
        key = shell_line(command)
        if key in attempted:  # it ran and its result is still missing: do not loop
            raise RuntimeError(f"{run_name}: `{key}` ended without writing its result in {planned.folder}")
        attempted.add(key)
        echo(f"[{suite_name}] {run_name} ({planned.state}): {key}")
        planned.folder.mkdir(parents=True, exist_ok=True)
        with open(planned.folder / "reproduce.log", "a") as log:
            result = subprocess.run(command, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"{run_name}: `{key}` failed with exit status {result.returncode}; "
                               f"see {planned.folder / 'reproduce.log'}")


def submit_slurm(planned: Sequence[Planned], suite_name: str, ci: bool, work_dir: Path, repo: Path,
                 data: Optional[Path], cluster: Optional[str] = None, partition: Optional[str] = None,
                 timeout_min: int = 4320, gpus_per_node: int = 8) -> List:
    """One submitit job per unfinished run; each job launches its run's steps with torchrun on its node."""
    import submitit
    executor = submitit.AutoExecutor(folder=str(work_dir / "submitit" / "%j"), cluster=cluster)
    jobs = []
    for p in planned:
        if not p.commands:
            continue
        params = dict(timeout_min=timeout_min, name=f"{suite_name}-{p.run.name}", nodes=1, tasks_per_node=1)
        if executor.cluster == "slurm":
            params.update(gpus_per_node=min(gpus_per_node, p.run.gpus), cpus_per_task=10 * min(gpus_per_node,
                                                                                                 p.run.gpus))
            if partition:
                params["slurm_partition"] = partition
        executor.update_parameters(**params)
        launcher = "torchrun" if executor.cluster == "slurm" else "local"
        jobs.append(executor.submit(run_one, suite_name, ci, p.run.name, str(work_dir), str(repo), launcher,
                                    str(data) if data else None))
    return jobs
