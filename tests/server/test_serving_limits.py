"""`serve` raises its open-files limit to hold `max_connections`, never past the hard limit."""

import resource

import pytest

from callboard.server.http.serving import raise_open_files_limit


@pytest.fixture
def low_soft_limit():
    """This process's soft limit lowered to 256 for the test, then put back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_rises_to_hold_the_connections(low_soft_limit):
    hard = low_soft_limit
    expected = 1000 + 128 if hard == resource.RLIM_INFINITY else min(1000 + 128, hard)
    assert raise_open_files_limit(1000) == expected
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)


def test_the_soft_limit_never_goes_past_the_hard_one_nor_down(low_soft_limit):
    hard = low_soft_limit
    raise_open_files_limit(10**9)
    soft_now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft_now == hard or hard == resource.RLIM_INFINITY
    assert raise_open_files_limit(10) == soft_now  # never lowered
