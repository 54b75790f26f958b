"""Floor 3, cluster targets: Kubernetes pod settings, Kubeflow submit, schedules, the
Kubernetes work pool. A user's pipeline calls :func:`with_settings` on its tasks."""

from loopline.pipelines.cluster.pods import build, with_settings

__all__ = ["build", "with_settings"]
