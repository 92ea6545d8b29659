"""Table tests for the restart policy: delays over run histories, and the restart limit."""

import pytest

from dokuen.errors import SettingsError
from dokuen.supervise.restart import RestartPolicy, Run, next_delay, parse_restart_limit

# Runs shorter than FAST are fast failures; a run of RESET or more forgives everything before.
FAST, RESET = 1.0, 30.0
POLICY = RestartPolicy(
    first_delay=0.1, max_delay=2.0, reset_after=RESET, fast_failure=FAST, limit=5
)
QUICK, SLOW, LONG = 0.2, 5.0, 60.0  # a fast failure, up a while, up long enough to reset


def history(*uptimes: float) -> list[Run]:
    """Back-to-back runs, oldest first, lasting ``uptimes`` seconds each."""
    runs, clock = [], 1000.0
    for uptime in uptimes:
        runs.append(Run(clock, clock + uptime))
        clock += uptime + 0.5
    return runs


@pytest.mark.parametrize(
    ("uptimes", "delay"),
    [
        pytest.param((LONG,), 0.0, id="long-run"),
        pytest.param((QUICK, QUICK, LONG), 0.0, id="long-run-after-failures"),
        pytest.param((RESET,), 0.0, id="exactly-reset-after"),
        pytest.param((QUICK, QUICK, RESET, QUICK), 0.1, id="exactly-reset-after-resets"),
        pytest.param((SLOW,), 0.0, id="first-failure-after-being-up"),
        pytest.param((LONG, SLOW), 0.0, id="first-failure-after-long-run"),
        pytest.param((FAST,), 0.0, id="exactly-fast-failure-is-not-fast"),
        pytest.param((QUICK,), 0.1, id="fast-1"),
        pytest.param((QUICK, QUICK), 0.2, id="fast-2"),
        pytest.param((QUICK,) * 3, 0.4, id="fast-3"),
        pytest.param((QUICK,) * 4, 0.8, id="fast-4"),
        pytest.param((LONG, QUICK), 0.1, id="fast-after-long-run"),
        pytest.param((LONG, QUICK, QUICK, QUICK), 0.4, id="fast-3-after-long-run"),
        pytest.param((SLOW, QUICK), 0.2, id="fast-after-slow-counts-the-slow"),
        pytest.param((QUICK, SLOW), 0.2, id="slow-after-fast-is-not-first"),
        pytest.param((SLOW,) * 5, 1.6, id="slow-failures-back-off"),
        pytest.param((SLOW,) * 6, 2.0, id="capped-at-max-delay"),
        pytest.param((SLOW,) * 50, 2.0, id="stays-at-max-delay"),
        pytest.param((QUICK,) * 4 + (SLOW,), 1.6, id="slow-breaks-the-fast-run"),
        pytest.param((QUICK,) * 4 + (SLOW, QUICK), 2.0, id="fast-run-restarts-after-slow"),
        pytest.param((QUICK,) * 4 + (LONG, QUICK), 0.1, id="long-run-resets-streak"),
        pytest.param((QUICK,) * 4 + (LONG, SLOW), 0.0, id="long-run-resets-to-immediate"),
        pytest.param((QUICK,) * 5, None, id="limit-fast-failures-crash"),
        pytest.param((LONG,) + (QUICK,) * 5, None, id="limit-after-long-run"),
        pytest.param((SLOW,) + (QUICK,) * 5, None, id="limit-after-slow-run"),
        pytest.param((QUICK,) * 8, None, id="past-limit"),
        pytest.param((QUICK,) * 5 + (LONG,), 0.0, id="long-run-after-limit"),
    ],
)
def test_next_delay(uptimes: tuple[float, ...], delay: float | None) -> None:
    assert next_delay(history(*uptimes), POLICY) == delay


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 0.1), (2, 0.2), (5, 1.6), (6, 2.0), (100, 2.0), (2000, 2.0)],
)
def test_next_delay_without_limit_never_crashes(failures: int, delay: float) -> None:
    forever = RestartPolicy(first_delay=0.1, max_delay=2.0, limit=None)
    assert next_delay(history(*(QUICK,) * failures), forever) == delay


def test_next_delay_default_policy() -> None:
    policy = RestartPolicy()
    assert next_delay(history(QUICK), policy) == policy.first_delay
    assert next_delay(history(*(QUICK,) * 9), policy) == policy.first_delay * 2**8
    assert next_delay(history(*(QUICK,) * 10), policy) is None  # limit 10
    assert next_delay(history(*(SLOW,) * 20), policy) == policy.max_delay


def test_next_delay_returns_floats() -> None:
    policy = RestartPolicy(first_delay=1, max_delay=8, limit=None)
    delays = [next_delay(history(*(QUICK,) * n), policy) for n in range(1, 6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(type(delay) is float for delay in delays)


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("forever", None),
        ("Forever", None),
        (" always ", None),
        ("0", None),
        ("1", 1),
        ("5", 5),
        (" 12\n", 12),
        ("007", 7),
    ],
)
def test_parse_restart_limit(text: str, limit: int | None) -> None:
    assert parse_restart_limit(text) == limit


@pytest.mark.parametrize("text", ["", "never", "-1", "+3", "1.5", "5 times", "²", "５", "1e3"])  # noqa: RUF001
def test_parse_restart_limit_errors(text: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_restart_limit(text)
    assert str(info.value) == (
        f"DOKUEN_RESTART_LIMIT={text!r} is not a number of restarts or 'forever'"
    )
