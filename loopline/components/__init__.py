"""Floor 2: the KFP components, all of them: thin typed wrappers over :mod:`loopline.ml`."""
