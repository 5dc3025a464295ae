"""Check an MLflow store before any stage starts: plain urllib, so answering fast beats importing mlflow."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from posttrain.tracking import TrackingError

PREFLIGHT_TIMEOUT = 5.0  # seconds per HTTP try; the whole check stays under 10 s


def _server_error(uri: str, why: str) -> TrackingError:
    return TrackingError(
        f"tracking server {uri} is not reachable ({why}). Start it (e.g. `mlflow server --host 127.0.0.1 "
        f"--port 5000`), fix tracking.uri, or run with tracking=none. No stage was started."
    )


def preflight(uri: str, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """An HTTP server must answer MLflow's REST API; a SQLite file must be creatable.

    Raises:
        TrackingError: naming the URI, what went wrong and what to do.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        request = urllib.request.Request(url, headers=_auth_headers())
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(1)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                return  # reachable; the credentials are MLflow's to check (MLFLOW_TRACKING_* env)
            raise TrackingError(
                f"tracking server {uri} answered HTTP {err.code} to {url}: is it an MLflow tracking server? "
                f"Fix tracking.uri or run with tracking=none. No stage was started."
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise _server_error(uri, str(getattr(err, "reason", err))) from None
    elif parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"tracking.uri {uri}: cannot create {db.parent} ({err.strerror}); "
                                f"choose a writable path or run with tracking=none") from None
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"tracking.uri {uri}: {db} is not writable; choose another path or tracking=none")


def _auth_headers() -> dict[str, str]:
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}
