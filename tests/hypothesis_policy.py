"""How property-based tests run in this suite (loaded by tests/conftest.py).

CI must not depend on luck: every hypothesis test is derandomized (its examples are a
function of the test alone), with no example database (nothing carried over from an earlier
run) and a bounded example count of its own. The "ci" profile is the default; a test that
opts out (``derandomize=False`` without ``@seed``) fails with the fix in the message.
Randomized hunting runs outside CI with ``SEG_PLUGINS_HYPOTHESIS_PROFILE=hunt`` (see
``make fuzz``); what it finds becomes a fixed regression test.
"""

import os

from hypothesis import settings

PROFILE = os.environ.get("SEG_PLUGINS_HYPOTHESIS_PROFILE", "ci")
HUNTING = PROFILE == "hunt"
# When hunting, each property test runs this many times its CI example count.
HUNT_FACTOR = int(os.environ.get("SEG_PLUGINS_FUZZ_FACTOR", "20"))

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("hunt", derandomize=False, database=None, print_blob=True)


def load() -> None:
    settings.load_profile(PROFILE)


def property_settings(max_examples: int, **kwargs) -> settings:
    """A property test's settings: ``max_examples`` derandomized examples in CI; when
    hunting, ``HUNT_FACTOR`` times as many, drawn from the run's seed (``make fuzz`` prints
    it; ``--hypothesis-seed`` replays it)."""
    return settings(
        max_examples=max_examples * (HUNT_FACTOR if HUNTING else 1),
        derandomize=not HUNTING,
        database=None,
        deadline=None,
        **kwargs,
    )


def randomized_property_test(function) -> bool:
    """True for a hypothesis test whose examples would change from run to run: not
    derandomized by its settings (its own or the profile's) and no ``@seed``."""
    if not getattr(function, "is_hypothesis_test", False):
        return False
    if getattr(function, "_hypothesis_internal_use_seed", None) is not None:
        return False
    own = getattr(function, "_hypothesis_internal_use_settings", None)
    return not (own if own is not None else settings.default).derandomize
