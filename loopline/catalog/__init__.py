"""The component catalog: versioned, checked KFP components that pipelines load by range.

In a pipeline file::

    from loopline import catalog

    normalize = catalog.load("normalize@^1.2")  # a KFP component, like load_component_from_*

The catalog lives in the platform database (``LOOPLINE_DATABASE_URL``), so a team that
shares the database shares the catalog. ``loopline component`` creates, checks, publishes
and browses components; see ``checks`` for the contract and :mod:`loopline.storage.catalog` for the records.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from loopline.catalog.interface import interface, refuse_out_of_line, refuse_understated
from loopline.catalog.lock import active
from loopline.catalog.references import parse_reference
from loopline.core.settings import Settings, load_settings
from loopline.storage.catalog import Catalog
from loopline.storage.database import open_database


def load(reference: str, settings: Settings | None = None):
    """The component ``name@range`` (``normalize@^1.2``; a bare name is the newest) as a
    KFP component. Inside ``loopline compile`` or ``run``, the pipeline's lock file pins it."""
    from kfp import components

    name, wanted = parse_reference(reference)
    pinning = active()
    with opened(settings or load_settings()) as catalog:
        pinned = pinning.pinned(name, wanted) if pinning else None
        entry = catalog.get(name, str(pinned) if pinned else wanted.text)
    if pinning:
        pinning.record(name, wanted, entry)
    return components.load_component_from_text(entry.component_yaml)


@contextlib.contextmanager
def opened(settings: Settings) -> Iterator:
    """The catalog in ``settings``' database, migrated to this code's schema first."""
    database = open_database(settings, migrate=True)
    try:
        yield Catalog(database)
    finally:
        database.close()


def publish_checked(store, folder, version, report, *, changelog: str = "", owner=None):
    """Store a component whose checks ``report`` passed, as ``version`` (a Version)."""
    import yaml

    new = interface(yaml.safe_load(report.component_yaml))
    return store.publish(
        name=folder.name,
        version=version,
        owner=owner or folder.owner,
        description=folder.description,
        source=folder.source,
        component_yaml=report.component_yaml,
        interface=new,
        changelog=changelog,
        report=report.to_json(),
        check=functools.partial(refuse_understated, folder.name, version, new),
        check_above=functools.partial(refuse_out_of_line, folder.name, version, new),
    )
