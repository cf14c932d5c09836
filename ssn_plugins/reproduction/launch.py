"""Running a suite's runs: one after another here (``local`` / ``torchrun``), or as Slurm jobs through submitit."""
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .figures import figure_id
from .record import write_run_record
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
        figure = planned.run.figure(suite.name)
        write_run_record(planned.folder, suite=suite.name, run=run_name, table=figure.table if figure else None,
                         figure=figure_id(figure) if figure else None)
        with open(planned.folder / "reproduce.log", "a") as log:
            result = subprocess.run(command, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"{run_name}: `{key}` failed with exit status {result.returncode}; "
                               f"see {planned.folder / 'reproduce.log'}")


@dataclass
class SlurmOptions:
    """The scheduler's settings of a suite's jobs (``tools/reproduce.py --partition/--account/...``)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    mem: Optional[str] = None            # per node, Slurm's notation ("400G")
    time_min: int = 4320
    gpus_per_node: int = 8
    cpus_per_gpu: int = 10


def slurm_parameters(run_gpus: int, options: SlurmOptions) -> dict:
    """submitit's ``slurm_*`` parameters of one run's job: one node with up to ``gpus_per_node`` GPUs."""
    gpus = min(options.gpus_per_node, run_gpus)
    params = dict(gpus_per_node=gpus, cpus_per_task=options.cpus_per_gpu * gpus)
    params.update({f"slurm_{key}": value for key, value in (("partition", options.partition),
                                                           ("account", options.account), ("qos", options.qos),
                                                           ("mem", options.mem)) if value})
    return params


#: a run folder's note of the job that was submitted for it (job id, executor, and the local executor's process)
JOB_FILE = "submitted_job.json"
#: Slurm job states of a job that will still run (squeue / sacct names)
WAITING_OR_RUNNING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
                      "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


def active_job(folder: Path) -> Optional[str]:
    """``"job ID (STATE)"`` when the job last submitted for the run in ``folder`` is still queued or running,
    else ``None``: Slurm's state through submitit (sacct), the local executor's by its process."""
    note = folder / JOB_FILE
    if not note.exists():
        return None
    job = json.loads(note.read_text())
    if job["cluster"] == "slurm":
        import submitit
        state = submitit.SlurmJob(folder=job["folder"], job_id=job["job_id"]).state.split(" ")[0]
    else:  # the local executor's job is a process on this machine
        try:
            os.kill(job["pid"], 0)
            state = "RUNNING"
        except (OSError, TypeError):
            state = "ENDED"
    return f"job {job['job_id']} ({state})" if state in WAITING_OR_RUNNING else None


def submit_slurm(planned: Sequence[Planned], suite_name: str, ci: bool, work_dir: Path, repo: Path,
                 data: Optional[Path], cluster: Optional[str] = None, options: Optional[SlurmOptions] = None,
                 echo: Callable[[str], None] = print) -> List:
    """One submitit job per unfinished run; each job launches its run's steps with torchrun on its node. A run
    whose last job is still queued or running is not submitted again.

    ``cluster``: ``"slurm"``, or ``"local"`` (submitit's local executor, here); ``None`` (submitit's choice) is
    refused where there is no Slurm, which submitit would quietly turn into local runs."""
    import shutil

    import submitit
    options = options or SlurmOptions()
    if cluster != "local" and shutil.which("sbatch") is None:
        raise RuntimeError("--launcher slurm: no Slurm on this machine (sbatch not found); run on the cluster's "
                           "login node, or use --slurm-cluster local (submitit's local executor) or --launcher local")
    executor = submitit.AutoExecutor(folder=str(work_dir / "submitit" / "%j"), cluster=cluster)
    jobs = []
    for p in planned:
        if not p.commands:
            continue
        waiting = active_job(p.folder)
        if waiting:
            echo(f"{p.run.name}: {waiting} is still queued or running; not submitted again")
            continue
        params = dict(timeout_min=options.time_min, name=f"{suite_name}-{p.run.name}", nodes=1, tasks_per_node=1)
        if executor.cluster == "slurm":
            params.update(slurm_parameters(p.run.gpus, options))
        executor.update_parameters(**params)
        launcher = "torchrun" if executor.cluster == "slurm" else "local"
        job = executor.submit(run_one, suite_name, ci, p.run.name, str(work_dir), str(repo), launcher,
                              str(data) if data else None)
        process = getattr(job, "_process", None)  # the local executor's (submitit keeps it private)
        p.folder.mkdir(parents=True, exist_ok=True)
        (p.folder / JOB_FILE).write_text(json.dumps({
            "job_id": job.job_id, "cluster": executor.cluster, "folder": str(work_dir / "submitit" / "%j"),
            "pid": process.pid if process is not None else None}) + "\n")
        jobs.append(job)
    return jobs
