"""The drills' arithmetic (no root needed): stalls, percentiles, acknowledged writes."""

from __future__ import annotations

from lab.load import LoadReport, Outcome


def _report(*rows: tuple[float, float, int | None]) -> LoadReport:
    return LoadReport([Outcome(i, f"run-{i}", sent, done, status)
                       for i, (sent, done, status) in enumerate(rows)], started=0.0)


def test_longest_stall_is_the_longest_gap_between_successes() -> None:
    report = _report((0.0, 0.1, 200), (0.1, 0.2, 200), (0.2, 0.3, None), (0.3, 1.7, 200),
                     (1.7, 1.8, 200))
    assert abs(report.longest_stall_s() - 1.5) < 1e-9
    assert [o.index for o in report.failed] == [2]
    assert report.acknowledged_tokens == {"run-0", "run-1", "run-3", "run-4"}


def test_latency_percentiles_ignore_failures() -> None:
    report = _report(*[(float(i), i + 0.010, 200) for i in range(99)], (100.0, 105.0, 503))
    assert abs(report.latency_ms(0.50) - 10.0) < 1e-6
    summary = report.summary()
    assert summary["requests"] == 100 and summary["failed"] == 1


def test_longest_request_counts_failures_too() -> None:
    report = _report((0.0, 0.1, 200), (0.1, 2.6, 200), (0.2, 3.0, None))
    assert abs(report.longest_request_s() - 2.8) < 1e-9
    assert report.summary()["max_ms"] == 2800.0
