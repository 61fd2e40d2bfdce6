"""A task kind of your own: one module. Focal loss (Lin et al. 2017) for imbalanced
classification: cross-entropy weighted by (1 - p_true)^gamma, so easy, well-classified samples
count less. Metrics, reports and the exported model are the classification kind's."""

from typing import Annotated

import torch.nn.functional as F
from pydantic import Field

from medpipe.evaluation.metrics import CLASSIFICATION_METRICS
from medpipe.tasks.classification import ClassificationOptions, ClassificationTask
from medpipe.tasks.kinds import TaskKind, register_task_kind


class FocalOptions(ClassificationOptions):  # read from the `model` section, like `loss`
    focal_gamma: Annotated[float, Field(ge=0)] = 2.0


class FocalTask(ClassificationTask):
    Options = FocalOptions

    def loss(self, logits, y):
        if logits.shape[1] == 1 or self.task == "multilabel":
            return super().loss(logits, y)  # one logit per label: plain BCE
        log_p = F.log_softmax(logits, 1).gather(1, y.long()[:, None])[:, 0]
        return (-((1 - log_p.exp()) ** self.options.focal_gamma) * log_p).mean()


FOCAL = register_task_kind(
    TaskKind(
        name="focal",
        module=FocalTask,
        data_tasks=("binary", "multiclass"),
        metrics=CLASSIFICATION_METRICS,
        metric_prefixes=("f1_",),
        main_metrics=("auroc", "acc", "f1"),
        monitor="val/auroc",
        auto=False,  # chosen by task_kind=my_tasks.FOCAL, never by task_kind=auto
    )
)
