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
- a stage process is given EXIT_GRACE seconds, once its main thread is done, for MLflow to flush
  its queue of asynchronous metrics and end the run; then it exits with its true status anyway
  (0 if it wrote its manifest) and says so.
So with the server killed while a stage trains, the pipeline finishes its stages within about a
minute of the last training step (tests/integration/test_tracking_loss.py checks 60 s), and the
next invocation that reaches the server ends the runs left RUNNING.
"""

from __future__ import annotations

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


def bound_requests(env: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """Set the HTTP bounds in `env` where the user has not; returns the values in effect."""
    for key, value in HTTP_BOUNDS.items():
        env.setdefault(key, value)
    return {key: env[key] for key in HTTP_BOUNDS}


def exit_deadline(label: str, exit_code: Callable[[], int], grace: float = EXIT_GRACE) -> None:
    """Watch this process's end: `grace` seconds after the main thread finished, exit with
    `exit_code()` whatever tracking threads and atexit handlers are still waiting on."""

    def watch() -> None:
        threading.main_thread().join()
        time.sleep(grace)
        code = exit_code()
        try:
            print(f"{label} tracking: MLflow did not answer within {grace:.0f} s of the end of the stage; "
                  f"exiting without it (exit code {code}; the run is ended by the next posttrain run that "
                  f"reaches the server)", file=sys.__stderr__, flush=True)
        finally:
            os._exit(code)

    threading.Thread(target=watch, name="posttrain-exit-deadline", daemon=True).start()
