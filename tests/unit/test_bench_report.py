"""benchmarks/bench.py's report, without running anything: the targets are machine-checkable,
"Targets missed" names every row that misses one (a run once had grant → login p95 at 5.4 s
and listed nothing), a reference tool that keeps failing marks its row, and a noisy run says
so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("podssh_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("text", "higher", "expected"), [
    ("≥ 1.0x", True, (">=", 1.0, "x", False)),
    ("≤ 0.8x", False, ("<=", 0.8, "x", False)),
    ("p95 < 500 ms", False, ("<", 500.0, "ms", False)),
    ("p95 < 0.5 s", False, ("<", 0.5, "s", False)),
    ("100%", True, (">=", 100.0, "%", False)),
    ("< 1024 MiB", False, ("<", 1024.0, "MiB", False)),
    ("< 1 GiB", False, ("<", 1.0, "GiB", False)),
    ("< 2 % of a core", False, ("<", 2.0, "%", False)),
    ("≤ reference + 1 ms", False, ("<=", 1.0, "ms", True)),
    ("< 1,000 ms", False, ("<", 1000.0, "ms", False)),
])
def test_every_target_text_in_use_parses(bench: ModuleType, text: str, higher: bool,
                                          expected: tuple[str, float, str, bool]) -> None:
    t = bench.parse_target(text, higher)
    assert (t.op, t.bound, t.unit, t.plus_reference) == expected


def test_no_target_and_unreadable_targets(bench: ModuleType) -> None:
    assert bench.parse_target("") is None
    for text in ("fast enough", "p99 ≤ +10 ms", "≥ reference + 1.0x"):
        with pytest.raises(ValueError):
            bench.parse_target(text)


def row(bench: ModuleType, name: str, podssh: float | None, reference: float | None, unit: str, higher: bool,
        target: str, note: str = "") -> object:
    return bench.Row(name, podssh, reference, unit, "kubectl exec" if reference is not None or note else "", higher,
                     target, note)


def test_misses_lists_every_kind_of_miss_and_nothing_that_meets_its_target(bench: ModuleType) -> None:
    rows = [
        row(bench, "stdout throughput", 57.0, 64.5, "MiB/s", True, "≥ 1.0x"),  # 0.88x: miss
        row(bench, "stdin throughput", 110.0, 100.0, "MiB/s", True, "≥ 1.0x"),  # meets
        row(bench, "session setup", 101.0, 100.0, "ms", False, "≤ 0.8x"),  # 1.01x: miss
        row(bench, "echo p99", 3.5, 2.1, "ms", False, "≤ reference + 1 ms"),  # 3.5 > 3.1: miss
        row(bench, "echo p99 (fine)", 2.9, 2.1, "ms", False, "≤ reference + 1 ms"),
        row(bench, "500 idle pty sessions: success", 98.0, None, "%", True, "100%"),  # miss
        row(bench, "100 idle pty sessions: success", 100.0, None, "%", True, "100%"),
        row(bench, "1000 idle pty sessions: gateway RSS", 1100.0, None, "MiB", False, "< 1 GiB"),  # miss
        row(bench, "500 idle pty sessions: gateway RSS", 900.0, None, "MiB", False, "< 1 GiB"),
        row(bench, "1000 idle pty sessions: gateway CPU while idle", 15.1, None, "% of a core", False,
            "< 2 % of a core"),  # miss
        row(bench, "grant → first login (p95)", 5400.0, None, "ms", False, "p95 < 0.5 s"),  # the one once missed
        row(bench, "revoke → ended (p95)", 138.0, None, "ms", False, "p95 < 1 s"),
        row(bench, "sftp put", 80.0, None, "MiB/s", True, "",
            note="kubectl cp failed 3 times: unexpected EOF"),  # no target: not listed
        row(bench, "keystroke echo without reference", 3.0, None, "ms", False, "≤ reference + 1 ms",
            note="kubectl exec -it failed 3 times: boom"),  # cannot be checked: listed
        bench.Row("concurrency: FAILED", None, None, "", "", True, note="RuntimeError: no echo"),
    ]
    text = bench.misses(rows)
    listed = [line.split(":")[0].removeprefix("- ") for line in text.splitlines()]
    assert listed == ["stdout throughput", "session setup", "echo p99", "500 idle pty sessions",
                      "1000 idle pty sessions", "1000 idle pty sessions", "grant → first login (p95)",
                      "keystroke echo without reference", "concurrency"]
    assert "- stdout throughput: 0.88x against ≥ 1.0x, 12% short." in text
    assert "- session setup: 1.01x against ≤ 0.8x, 26% over." in text
    assert "- echo p99: 3.5 ms against ≤ reference + 1 ms (here 3.1 ms)." in text
    assert "- grant → first login (p95): 5,400.0 ms against p95 < 0.5 s." in text
    assert "boom" in text and "no echo" in text


def test_misses_says_none_when_everything_meets_its_target(bench: ModuleType) -> None:
    assert bench.misses([row(bench, "stdout", 70.0, 64.5, "MiB/s", True, "≥ 1.0x")]) == "- none"


def test_a_reference_tool_is_tried_three_times_then_marks_its_row(bench: ModuleType) -> None:
    calls: list[int] = []

    def flaky() -> float:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("kubectl cp… failed: unexpected EOF")
        return 1.5

    assert bench.retried(flaky, pause=0) == 1.5 and len(calls) == 3

    def broken() -> float:
        raise RuntimeError("kubectl cp… failed: unexpected EOF")

    value, note = bench.Bench.reference("kubectl cp", lambda: bench.retried(broken, pause=0))
    assert value is None and note == "kubectl cp failed 3 times: kubectl cp… failed: unexpected EOF"
    report = bench.render([bench.Row("sftp put 200 MiB", 80.0, value, "MiB/s", "kubectl cp", True, note=note)],
                          {}, 60.0)
    assert "| sftp put 200 MiB | 80.0 MiB/s | FAILED (kubectl cp) | - |" in report


def test_the_machine_state_is_recorded_and_a_noisy_floor_is_called_out(bench: ModuleType) -> None:
    before = bench.MachineState(2, (0.5, 0.4, 0.3))
    after = bench.MachineState(2, (1.9, 1.2, 0.8))
    quiet = [bench.Row("stdout throughput (512 MiB pod → client)", 62.0, 64.5, "MiB/s", "kubectl exec", True,
                       "≥ 1.0x", floor=588.5)]
    noisy = [bench.Row("stdout throughput (512 MiB pod → client)", 40.0, 44.0, "MiB/s", "kubectl exec", True,
                       "≥ 1.0x", floor=179.0)]
    text = bench.machine_note(quiet, before, after)
    assert text == "Machine: 2 CPUs; load average 0.50 / 0.40 / 0.30 before the run, " \
                   "load average 1.90 / 1.20 / 0.80 after."
    assert "Noisy run" in bench.machine_note(noisy, before, after)
    assert "179.0 MiB/s" in bench.machine_note(noisy, before, after)


def test_the_default_run_holds_a_thousand_sessions(bench: ModuleType) -> None:
    assert '"100,500,1000"' in BENCH.read_text()  # the --sessions default (main() parses it, runs nothing here)
