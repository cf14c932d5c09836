"""Running a suite's runs: one after another here (``local`` / ``torchrun``), or as Slurm jobs through submitit."""
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .figures import figure_id
from ..run_record import write_run_record
from .suites import Planned, get_suite, plan, shell_line


#: the lock a launcher holds on a run folder while it trains that run (its training process holds it too)
LOCK_FILE = "run.lock"


class RunFolderBusy(RuntimeError):
    """Another launcher, or the training it started, is working in the run folder."""


@contextlib.contextmanager
def run_folder_lock(folder: Path):
    """Hold ``folder``'s lock (``flock``, released when every process holding it ends, even when killed).

    Yields the locked file's descriptor, for the training process to inherit: an orphaned training keeps the
    folder locked after its launcher is gone. Raises :class:`RunFolderBusy` when someone holds it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunFolderBusy(f"{folder} is in use by {holder}; it still trains (or its launcher runs): wait for "
                                f"it, or stop it, before running this run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"launcher pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # (the lock goes with the last descriptor: a training process may still hold its copy)


def run_folder_busy(folder: Path) -> Optional[str]:
    """Who holds ``folder``'s lock (the lock file's note), or ``None`` when nobody does."""
    path = folder / LOCK_FILE
    if not path.exists():
        return None
    try:
        with run_folder_lock(folder):
            return None
    except RunFolderBusy:
        return path.read_text(errors="replace").strip() or "another process"


def _run_forwarding_signals(command: Sequence[str], cwd: Path, log, lock_fd: int) -> int:
    """Run ``command`` to its end; SIGTERM / SIGINT to this process go to it, and this process waits for it.

    The command runs in its own session, so a terminal's Ctrl-C reaches it once (forwarded from here), and it
    inherits the run folder's lock. After a forwarded signal the launcher stops: ``KeyboardInterrupt`` for
    SIGINT, ``SystemExit(128 + signal)`` for SIGTERM, once the training has ended.
    """
    child = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             pass_fds=(lock_fd,))
    received = []

    def forward(signum, frame):
        received.append(signum)
        child.send_signal(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        if received[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + received[0])
    return returncode


def run_one(suite_name: str, ci: bool, run_name: str, work_dir: str, repo: str, launcher: str,
            data: Optional[str] = None, echo: Callable[[str], None] = print) -> str:
    """Bring one run of a suite to its end: launch what its folder still needs, re-reading it after each step.

    The run folder is locked for the whole run (:func:`run_folder_lock`), by this process and the training it
    starts: a second launcher refuses it (:class:`RunFolderBusy`), also while an orphaned training still runs.
    SIGTERM / SIGINT are forwarded to the training, which is waited for. Returns the final state ("finished");
    raises ``RuntimeError`` naming the command that failed. Module-level so that submitit can pickle it for a
    Slurm job.
    """
    suite = get_suite(suite_name, ci)
    work, root = Path(work_dir), Path(repo)
    attempted = set()

    def planned_run():
        (planned,) = [p for p in plan(suite, work, root, launcher, Path(data) if data else None)
                      if p.run.name == run_name]
        return planned

    with run_folder_lock(planned_run().folder) as lock_fd:
        while True:
            planned = planned_run()  # re-read under the lock: what another launcher finished is not run again
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
                returncode = _run_forwarding_signals(command, root, log, lock_fd)
            if returncode != 0:
                raise RuntimeError(f"{run_name}: `{key}` failed with exit status {returncode}; "
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
    else ``None``: Slurm's state through submitit (sacct), the local executor's by the run folder's lock (and
    by its process while it starts)."""
    note = folder / JOB_FILE
    if not note.exists():
        return None
    job = json.loads(note.read_text())
    if job["cluster"] == "slurm":
        import submitit
        state = submitit.SlurmJob(folder=job["folder"], job_id=job["job_id"]).state.split(" ")[0]
    elif run_folder_busy(folder):  # the local executor's job, running the run (it holds the folder's lock)
        state = "RUNNING"
    else:  # or still starting: its process is alive and has written no result (a reused pid has no job folder)
        results = list(Path(str(job["folder"]).replace("%j", str(job["job_id"]))).glob(f"{job['job_id']}_*_result.pkl"))
        try:
            os.kill(job["pid"], 0)
            state = "ENDED" if results else "PENDING"
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
