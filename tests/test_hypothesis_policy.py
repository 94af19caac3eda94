"""The suite's property-test policy (tests/hypothesis_policy.py) recognises what it must."""

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from tests import hypothesis_policy


def _plain():
    pass


@given(st.integers())
def _profile_default(x):
    pass


@settings(max_examples=5)
@given(st.integers())
def _own_settings(x):
    pass


@settings(max_examples=5, derandomize=False)
@given(st.integers())
def _opted_out(x):
    pass


@seed(1234)
@settings(max_examples=5, derandomize=False)
@given(st.integers())
def _seeded(x):
    pass


def test_only_unseeded_randomized_property_tests_are_flagged():
    assert hypothesis_policy.PROFILE != "ci" or settings.default.derandomize
    flagged = {
        f.__name__
        for f in (_plain, _profile_default, _own_settings, _opted_out, _seeded)
        if hypothesis_policy.randomized_property_test(f)
    }
    if hypothesis_policy.PROFILE == "ci":
        assert flagged == {"_opted_out"}
    else:  # hunting: the profile randomizes what it does not pin
        assert {"_opted_out"} <= flagged and "_seeded" not in flagged
