"""The success model: what routing learns from the outcomes lanes report (no grpc, no store)."""

from orxaq_grpc.learning.features import TaskFeatures, Vector, task_features
from orxaq_grpc.learning.model import ModelShape, Prediction, SuccessModel

__all__ = ["ModelShape", "Prediction", "SuccessModel", "TaskFeatures", "Vector", "task_features"]
