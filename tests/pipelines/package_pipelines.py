"""Pipelines whose components declare packages (`packages_to_install`)."""

from kfp import dsl


@dsl.component(packages_to_install=["toolz==0.12.1"])
def toolz_version() -> str:
    import toolz

    return toolz.__version__


@dsl.component(packages_to_install=["loopline-no-such-package-0a1b2c"])
def impossible() -> str:
    return "never"


@dsl.component
def plain(x: int) -> int:
    return x + 1


@dsl.pipeline
def with_packages() -> str:
    return toolz_version().output


@dsl.pipeline
def with_a_missing_package() -> str:
    plain(x=1)
    return impossible().output
