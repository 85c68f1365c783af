"""What the test session (tests/conftest.py) sets for every test, checked under the suite
itself: a setting that is not in force lets the tests it was for fail on a loaded machine."""

from hypothesis import settings


def test_property_tests_run_without_hypothesis_deadline() -> None:
    """The profile "caravan" is the one in force: no deadline on an example, for a test
    without settings of its own and for one that sets others (a module's ``@settings``
    takes the rest from the loaded profile). Without it, an example slower than 200 ms
    (CI at load 10-25) failed with DeadlineExceeded, or Flaky. By its name too: with CI
    set, the profile hypothesis loads itself ("ci") has no deadline either."""
    assert settings.get_current_profile_name() == "caravan"
    assert settings().deadline is None
    assert settings(max_examples=5).deadline is None
