"""The datasets loopline ships with: embedded in scikit-learn, nothing is downloaded.

Named here, apart from their loaders, so that the CLI can list them without importing
the data stack.
"""

BUILTIN = {
    "digits": "8x8 handwritten digits, 1,797 images, 10 classes",
    "breast_cancer": "Wisconsin breast cancer, 569 rows, 30 features, 2 classes",
}
