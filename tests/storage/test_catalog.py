"""The catalog's store, on SQLite and on a real PostgreSQL: versions never change, the
version number must state the interface change, concurrent publishers of one version
get one winner."""

import functools
import json
import threading

import pytest

from loopline.catalog.interface import refuse_out_of_line, refuse_understated
from loopline.core.semver import Version
from loopline.storage.catalog import Catalog, CatalogError


def publish(catalog, version, inputs, name="normalize", changelog=None):
    """As the catalog publishes: with the semver check on the version below."""
    interface = {"inputs": inputs, "outputs": {"Output": {"type": "LIST"}}}
    version = Version.parse(version)
    return catalog.publish(
        name=name,
        version=version,
        owner="ds@example.com",
        description="d",
        source=f"# {version} {json.dumps(inputs)}",
        component_yaml="root: {}",
        interface=interface,
        changelog=changelog or f"v{version}",
        report={"passed": True, "checks": []},
        check=functools.partial(refuse_understated, name, version, interface),
        check_above=functools.partial(refuse_out_of_line, name, version, interface),
    )


VALUES = {"values": {"type": "LIST", "optional": False}}
SCALE = {"scale": {"type": "NUMBER_DOUBLE", "optional": True}}


def test_semver_is_enforced_against_the_version_below(database):
    catalog = Catalog(database)
    publish(catalog, "1.0.0", VALUES)
    with pytest.raises(
        CatalogError, match=r"optional input scale was added.*publish it as 1\.1\.0"
    ):
        publish(catalog, "1.0.1", {**VALUES, **SCALE})
    publish(catalog, "1.1.0", {**VALUES, **SCALE})
    with pytest.raises(CatalogError, match=r"input values was removed.*major.*as 2\.0\.0"):
        publish(catalog, "1.2.0", SCALE)
    with pytest.raises(CatalogError, match="already published, and versions never change"):
        publish(catalog, "1.1.0", {**VALUES, **SCALE})
    publish(catalog, "2.0.0", SCALE)
    publish(catalog, "1.1.1", {**VALUES, **SCALE})  # a fix for 1.x users, after 2.0.0
    assert [str(e.version) for e in catalog.versions("normalize")] == [
        "1.0.0",
        "1.1.0",
        "1.1.1",
        "2.0.0",
    ]
    assert str(catalog.get("normalize", "^1").version) == "1.1.1"
    assert catalog.get("normalize", "1.0.0").changelog == "v1.0.0"  # unchanged by later ones


def test_a_version_below_a_newer_one_must_not_promise_what_the_newer_lacks(database):
    """1.1.0 adding an input, published after 1.2.0: `^1.1` would resolve to 1.2.0,
    which lacks the input."""
    catalog = Catalog(database)
    publish(catalog, "1.0.0", VALUES)
    publish(catalog, "1.2.0", VALUES)
    with pytest.raises(CatalogError, match=r"1\.1\.0 would sit below 1\.2\.0.*scale was remo"):
        publish(catalog, "1.1.0", {**VALUES, **SCALE})
    publish(catalog, "1.1.0", VALUES)  # the same interface below is fine
    assert [str(e.version) for e in catalog.versions("normalize")] == ["1.0.0", "1.1.0", "1.2.0"]


def test_unknown_names_and_ranges_name_what_exists(database):
    catalog = Catalog(database)
    with pytest.raises(CatalogError, match="empty: publish one first"):
        catalog.get("normalize")
    publish(catalog, "1.0.0", VALUES)
    with pytest.raises(
        CatalogError, match="no component named scale is in the catalog; it holds normalize"
    ):
        catalog.get("scale")
    with pytest.raises(CatalogError, match=r"no version of normalize is in the range \^2.*1\.0\.0"):
        catalog.get("normalize", "^2")


def test_deprecation_keeps_the_version_loadable_and_says_why(database):
    catalog = Catalog(database)
    publish(catalog, "1.0.0", VALUES)
    catalog.deprecate("normalize", "1.0.0", "use 2.x")
    entry = catalog.get("normalize", "1.0.0")
    assert entry.deprecated == "use 2.x" and entry.source.startswith("# 1.0.0")


def test_concurrent_publishers_of_one_version_get_one_winner(database):
    catalog = Catalog(database)
    publish(catalog, "1.0.0", VALUES)
    outcomes, barrier = [], threading.Barrier(6)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            publish(catalog, "1.1.0", {**VALUES, **SCALE, f"extra{i}": SCALE["scale"]})
            outcomes.append("won")
        except CatalogError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1, outcomes
    assert all("1.1.0" in o for o in outcomes if o != "won")
    assert len(catalog.versions("normalize")) == 2


def test_the_page_escapes_what_publishers_wrote(database, tmp_path):
    from loopline.catalog import page

    catalog = Catalog(database)
    publish(catalog, "1.0.0", VALUES, changelog="<script>alert(1)</script>")
    catalog.record_uses("/p/pipe.catalog.lock", {"normalize": "1.0.0"})
    html = page.write(catalog, tmp_path / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "/p/pipe.catalog.lock</code> pins 1.0.0" in html
