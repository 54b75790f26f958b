"""Versions, ranges and interface changes: what each needs of the version number."""

import pytest

from loopline.catalog.interface import changes, needed
from loopline.catalog.references import parse_reference
from loopline.core.semver import Bump, Range, Version, VersionError

V = Version.parse


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("^1.2", ["1.2.0", "1.9.9"], ["1.1.9", "2.0.0"]),
        ("^0.3", ["0.3.0", "0.3.7"], ["0.4.0", "0.2.9"]),  # below 1.0 the minor is breaking
        ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0"]),
        ("~1", ["1.0.0", "1.9.0"], ["2.0.0"]),
        ("1.2.3", ["1.2.3"], ["1.2.4", "1.2.2"]),
        (">=1.0,<2", ["1.0.0", "1.5.0"], ["0.9.9", "2.0.0"]),
        (">1.0.0,<=1.2", ["1.0.1", "1.2.0"], ["1.0.0", "1.2.1"]),
        ("*", ["0.0.1", "9.9.9"], []),
    ],
)
def test_ranges_admit_what_npm_and_pep440_would(spec, inside, outside):
    wanted = Range.parse(spec)
    assert all(wanted.contains(V(v)) for v in inside)
    assert not any(wanted.contains(V(v)) for v in outside)


def test_the_newest_version_in_range_is_chosen():
    versions = [V("1.0.0"), V("1.4.0"), V("1.10.0"), V("2.0.0")]
    assert Range.parse("^1").best(versions) == V("1.10.0")  # numeric, not string, order
    assert Range.parse("^3").best(versions) is None


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0-rc1", "", "1.0.0; rm -rf /"])
def test_a_malformed_version_is_refused_with_the_accepted_form(bad):
    with pytest.raises(VersionError, match="MAJOR.MINOR.PATCH"):
        V(bad)


@pytest.mark.parametrize("bad", ["normalize@^x", "normalize@>>1", "Normalize@1", "../x@1.0.0"])
def test_a_malformed_reference_is_refused(bad):
    with pytest.raises(VersionError):
        parse_reference(bad)


def iface(inputs=None, outputs=None):
    return {"inputs": inputs or {}, "outputs": outputs or {}}


REQUIRED = {"type": "LIST", "optional": False}
OPTIONAL = {"type": "NUMBER_DOUBLE", "optional": True}


@pytest.mark.parametrize(
    ("before", "after", "bump", "what"),
    [
        (iface({"x": REQUIRED}), iface({}), Bump.MAJOR, "input x was removed"),
        (
            iface({"x": REQUIRED}),
            iface({"x": {**REQUIRED, "type": "STRING"}}),
            Bump.MAJOR,
            "input x changed type from LIST to STRING",
        ),
        (iface(), iface({"x": REQUIRED}), Bump.MAJOR, "required input x was added"),
        (
            iface({"x": OPTIONAL}),
            iface({"x": {**OPTIONAL, "optional": False}}),
            Bump.MAJOR,
            "input x became required",
        ),
        (iface(outputs={"o": {"type": "LIST"}}), iface(), Bump.MAJOR, "output o was removed"),
        (iface(), iface({"x": OPTIONAL}), Bump.MINOR, "optional input x was added"),
        (iface(), iface(outputs={"o": {"type": "LIST"}}), Bump.MINOR, "output o was added"),
        (iface({"x": REQUIRED}), iface({"x": REQUIRED}), Bump.PATCH, None),
    ],
)
def test_each_interface_change_needs_its_bump(before, after, bump, what):
    found = changes(before, after)
    assert needed(found) == bump
    assert what is None and not found or what in [c.what for c in found]
