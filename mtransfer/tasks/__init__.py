"""One object per task: what a head's outputs mean, its loss, its decisions and scores, its metrics and export.

The model, the trainer, the export and the CLI ask the task (:func:`get_task`) instead of testing
its name. Adding a task is one module here that subclasses :class:`Task` and registers it.

>>> get_task("regression").has_class_names
False
>>> task_names()
['single_label_classification', 'multi_label_classification', 'regression', 'ctc']
"""

from mtransfer.tasks.base import Task, get_task, register_task, task_names
from mtransfer.tasks import classification, regression, ctc  # noqa: E402,F401  (register the shipped tasks)

__all__ = ["Task", "get_task", "register_task", "task_names"]
