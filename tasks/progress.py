"""What a long run shows between Running and its end: a progress artifact, and a log line per finished case."""

from __future__ import annotations

import statistics
import threading

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from diffbench.results import UNFINISHED, CaseResult

PROGRESS_KEY = "diffusion-comparison-progress"


class RunProgress:
    """Cases finished out of `total`, on the flow run's progress artifact; each counted once."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.artifact_id = None
        try:
            self.artifact_id = create_progress_artifact(0.0, key=PROGRESS_KEY, description=self.describe())
        except Exception:  # noqa: BLE001 - a run measures without its progress bar
            get_run_logger().exception("progress artifact not created")

    def describe(self) -> str:
        return f"{len(self.finished)} of {self.total} case(s) finished"

    def result_finished(self, result: CaseResult) -> None:
        """Count `result` if it is final; amendments of a counted case change nothing."""
        if result.status in UNFINISHED:
            return
        latencies = [sample.client_latency_s for sample in result.samples]
        median = f", median {statistics.median(latencies):.3f} s" if latencies else ""
        self.case_finished(result.case_id, result.framework, f"{result.error_class or result.status}{median}")

    def case_finished(self, case_id: str, framework: str, how: str) -> None:
        """Count a finished case once, log it, and move the bar."""
        with self._lock:
            if (case_id, framework) in self.finished:
                return
            self.finished.add((case_id, framework))
            done, description = len(self.finished), self.describe()
        get_run_logger().info("%d/%d finished: %s/%s %s", done, self.total, case_id, framework, how)
        if self.artifact_id is not None:
            try:
                update_progress_artifact(self.artifact_id, 100 * done / self.total, description=description)
            except Exception:  # noqa: BLE001 - the case is stored; only its bar is late
                get_run_logger().exception("progress artifact not updated")
