"""Executors: where a job's steps run (this process, or a Ray cluster). Steps say what runs."""

from corpus.executor.base import Executor, Step, StepContext, StepProgress
from corpus.executor.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "Step", "StepContext", "StepProgress"]
