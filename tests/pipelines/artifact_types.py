"""A third-party artifact type, as a library such as google-cloud-pipeline-components
ships them: a class in an importable module, its schema title in the ``google``
namespace (KFP accepts custom types only there), with helpers of its own."""

from kfp import dsl


class BQTable(dsl.Artifact):
    schema_title = "google.BQTable"
    schema_version = "0.0.1"

    @property
    def table_id(self) -> str:
        return (
            f"{self.metadata['projectId']}.{self.metadata['datasetId']}.{self.metadata['tableId']}"
        )
