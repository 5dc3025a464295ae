"""How long MLflow may make training wait: every request bounded, and a process that does not outlive
its work because of tracking.

MLflow's own defaults retry a request 7 times with backoff factor 2 and a 120 s timeout: about 4
minutes per call against a dead server, and a stage that finished training hangs in the client.
Here, unless the user set them (their environment wins):
- MLFLOW_HTTP_REQUEST_MAX_RETRIES=2, BACKOFF_FACTOR=1, BACKOFF_JITTER=0.5, TIMEOUT=15 s: a request
  to a server that is gone (connection refused) fails in about 3 s (backoff 0 + 2 s + jitter); to
  one that accepts but never answers, in at most 3 x 15 + 3 = 48 s;
- the orchestrator stops calling a store it has lost (posttrain/tracking/mlflow/pipeline.py), so
  that bound is paid once per invocation, not per call;
- a stage process, once its main thread is done, exits at once if the store does not answer, and
  otherwise gives MLflow EXIT_GRACE seconds to flush its queue of asynchronous metrics and end the
  run; then it exits with its true status anyway (0 if it wrote its manifest) and says so.
So with the server killed while a stage trains, the pipeline finishes its stages within about a
minute of the last training step (tests/integration/test_tracking_loss.py checks 60 s), and the
next invocation that reaches the server ends the runs left RUNNING.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
EXIT_GRACE = 20.0  # seconds a stage process may spend in tracking after its work is done


class _FirstOnly(logging.Filter):
    """Lets the first record through; a dead server would otherwise print one error per queued batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.seen:
            return False
        self.seen = True
        record.msg = f"{record.msg} (further errors of this logger are not shown)"
        return True


def bound_requests(env: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """Set the HTTP bounds in `env` where the user has not; returns the values in effect. In this
    process (`env` is os.environ) the retry chatter of urllib3 and MLflow's logging queue is cut to
    one line: posttrain reports a lost store itself."""
    for key, value in HTTP_BOUNDS.items():
        env.setdefault(key, value)
    if env is os.environ:
        for name in ("urllib3.connectionpool", "mlflow.utils.async_logging.async_logging_queue"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _FirstOnly) for f in logger.filters):
                logger.addFilter(_FirstOnly())
    return {key: env[key] for key in HTTP_BOUNDS}


def exit_deadline(label: str, exit_code: Callable[[], int], reachable: Callable[[], bool],
                  grace: float = EXIT_GRACE) -> None:
    """Watch this process's end: once the main thread is done, exit with `exit_code()` at once if the
    store does not answer (`reachable()`), else after `grace` seconds, whatever tracking threads and
    atexit handlers (MLflow's queue of asynchronous metrics, ending the run) are still waiting on."""

    def leave(why: str) -> None:
        code = exit_code()
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            print(f"{label} tracking: {why}; exiting without it (exit code {code}; the run is ended by the "
                  f"next posttrain run that reaches the store)", file=sys.__stderr__, flush=True)
        finally:
            os._exit(code)

    def watch() -> None:
        threading.main_thread().join()
        if not reachable():
            leave("the MLflow store is not reachable at the end of the stage")
        time.sleep(grace)
        leave(f"MLflow did not finish within {grace:.0f} s of the end of the stage")

    threading.Thread(target=watch, name="posttrain-exit-deadline", daemon=True).start()
