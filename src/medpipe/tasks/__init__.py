"""Task kinds: what is learnt from the data (classification, regression, ...). Each kind is one
module of this package: a LightningModule subclass of `MedTask` with its options, losses, metrics,
report and exported model, registered with `register_task_kind(TaskKind(...))`."""
