"""The budget ledger refuses overspend, never charges a retried job twice, and holds under concurrency."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cleanroom.errors import PolicyError
from cleanroom.privacy import BudgetLedger

CHARGER = """
import sys, time
from pathlib import Path
from cleanroom.errors import PolicyError
from cleanroom.privacy import BudgetLedger
ledger, worker, go = BudgetLedger(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
granted = 0
for i in range(15):
    try:
        ledger.charge("coalition", 1, f"{worker}-job{i}", "overlap", 0.5, 5.0)
        granted += 1
    except PolicyError:
        pass
print(granted)
"""


def test_refuses_overspend_and_records_the_refusal(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    remaining = [ledger.charge("coalition", 1, f"job{i}", "overlap", 0.5, 5.0) for i in range(10)]
    assert remaining == pytest.approx([5.0 - 0.5 * (i + 1) for i in range(10)])
    with pytest.raises(PolicyError, match="privacy budget exhausted"):
        ledger.charge("coalition", 1, "job10", "overlap", 0.5, 5.0)
    assert ledger.spent("coalition", 1) == pytest.approx(5.0)
    assert ledger.refusals("coalition", 1) == 1


def test_float_charges_that_meet_the_budget_exactly_are_allowed(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    for i in range(10):
        ledger.charge("coalition", 1, f"job{i}", "by_district", 0.1, 1.0)
    with pytest.raises(PolicyError):
        ledger.charge("coalition", 1, "job10", "by_district", 0.1, 1.0)


def test_budgets_are_per_consortium_and_epoch(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    ledger.charge("coalition", 1, "job", "overlap", 5.0, 5.0)
    assert ledger.charge("coalition", 2, "job", "overlap", 5.0, 5.0) == 0.0
    assert ledger.charge("other", 1, "job", "overlap", 5.0, 5.0) == 0.0


def test_retried_job_is_not_charged_twice(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    assert ledger.charge("coalition", 1, "job-a", "overlap", 2.0, 5.0) == pytest.approx(3.0)
    assert ledger.charge("coalition", 1, "job-a", "overlap", 2.0, 5.0) == pytest.approx(3.0)
    assert ledger.charge("coalition", 1, "job-a", "by_district", 2.0, 5.0) == pytest.approx(1.0)
    assert ledger.spent("coalition", 1) == pytest.approx(4.0)
    with pytest.raises(PolicyError, match="new job id"):
        ledger.charge("coalition", 1, "job-a", "overlap", 1.0, 5.0)
    # an edited input is a new job id and pays again
    with pytest.raises(PolicyError, match="exhausted"):
        ledger.charge("coalition", 1, "job-b", "overlap", 2.0, 5.0)


def test_a_retry_still_succeeds_once_the_budget_is_spent(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    ledger.charge("coalition", 1, "job-a", "overlap", 5.0, 5.0)
    assert ledger.charge("coalition", 1, "job-a", "overlap", 5.0, 5.0) == 0.0


def test_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    BudgetLedger(path).charge("coalition", 1, "job-a", "overlap", 3.0, 5.0)
    BudgetLedger(path).record_release("coalition", 1, "job-a", "overlap", b"noisy numbers")
    reopened = BudgetLedger(path)
    assert reopened.spent("coalition", 1) == pytest.approx(3.0)
    assert reopened.charge("coalition", 1, "job-a", "overlap", 3.0, 5.0) == pytest.approx(2.0)
    with pytest.raises(PolicyError):
        reopened.charge("coalition", 1, "job-b", "overlap", 3.0, 5.0)
    assert reopened.stored_release("coalition", 1, "job-a", "overlap") == b"noisy numbers"
    assert reopened.stored_release("coalition", 1, "job-b", "overlap") is None


def test_first_recorded_release_wins(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    ledger.record_release("coalition", 1, "job-a", "overlap", b"first draw")
    ledger.record_release("coalition", 1, "job-a", "overlap", b"second draw")
    assert ledger.stored_release("coalition", 1, "job-a", "overlap") == b"first draw"


def test_concurrent_threads_never_exceed_the_budget(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.sqlite")
    granted: list[str] = []

    def worker(name: str) -> None:
        for i in range(15):
            try:
                ledger.charge("coalition", 1, f"{name}-{i}", "overlap", 0.5, 5.0)
                granted.append(name)
            except PolicyError:
                pass

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 10
    assert ledger.spent("coalition", 1) == pytest.approx(5.0)


def test_concurrent_processes_never_exceed_the_budget(tmp_path: Path) -> None:
    path, go = tmp_path / "ledger.sqlite", tmp_path / "go"
    BudgetLedger(path)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CHARGER, str(path), f"p{n}", str(go)], stdout=subprocess.PIPE, text=True
        )
        for n in range(2)
    ]
    assert all(worker.stdout.readline().strip() == "ready" for worker in workers)
    go.touch()
    granted = [int(worker.communicate(timeout=120)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert sum(granted) == 10
    assert BudgetLedger(path).spent("coalition", 1) == pytest.approx(5.0)
    assert BudgetLedger(path).refusals("coalition", 1) == 20
