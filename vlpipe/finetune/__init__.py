"""Fine-tuning a pre-trained ALBEF on downstream tasks (`vlpipe finetune TASK`).

:data:`~vlpipe.finetune.tasks.TASKS` maps a task name to its :class:`~vlpipe.finetune.spec.TaskSpec`;
:func:`~vlpipe.finetune.run.run_finetune` runs any of them with the training machinery pre-training
uses. See docs/finetune.md.
"""

from vlpipe.finetune.job import FinetuneJob
from vlpipe.finetune.spec import EvalRequest, Evaluation, TaskSpec, TrainRecipe
from vlpipe.finetune.tasks import TASKS, get_task, load_task_checkpoint

__all__ = ["EvalRequest", "Evaluation", "FinetuneJob", "TASKS", "TaskSpec", "TrainRecipe", "get_task",
           "load_task_checkpoint"]
