"""The decorator of every built-in KFP component: the platform image, nothing installed at
run time. Component bodies import their logic, because KFP ships only the function's
source to the executor; and their modules have no ``from __future__ import
annotations``, because KFP reads the annotations as types."""

from kfp import dsl

from loopline.core.images import PLATFORM_IMAGE

component = dsl.component(base_image=PLATFORM_IMAGE, install_kfp_package=False)
