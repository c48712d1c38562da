"""Training a pretrained backbone: the model and the two-stage schedule.

``--finetune head`` trains only the new head for every epoch. ``top:N`` and
``all`` train the head alone for the first ``head_epochs`` (default half the
epochs, at least one), then open the top N blocks (or every layer) and train
on at a tenth of the learning rate with a fresh optimizer. Both stages are
checkpointed like any run: ``model.keras`` keeps the layers' trainable flags
and the stage's optimizer, so ``--resume`` continues either stage exactly,
and a run resumed during the head stage switches at the same epoch as the
uninterrupted run would.
"""

from __future__ import annotations

from longtail.backbones import BACKBONES, build_classifier, parse_finetune, set_trainable_blocks

__all__ = ["FINETUNE_LR_SCALE", "backbone_run_record", "build_backbone_model", "fit_in_stages",
           "head_epochs", "is_backbone"]

#: Learning rate of the fine-tuning stage, relative to the head stage's.
FINETUNE_LR_SCALE = 0.1


def is_backbone(name: str | None) -> bool:
    """Whether ``--model name`` names a pretrained backbone."""
    return name in BACKBONES


def head_epochs(config) -> int:
    """Epochs of the head-only stage: all of them for ``head``, else half (>= 1)."""
    mode, _ = parse_finetune(config.finetune)
    if mode == "head":
        return config.epochs
    if config.head_epochs is not None:
        return min(config.head_epochs, config.epochs)
    return max(1, config.epochs // 2)


def build_backbone_model(config, num_classes: int, output_bias):
    """The classifier for ``config.model`` with its backbone frozen (stage one)."""
    from longtail.models import resolve_augment

    model, _ = build_classifier(config.model, (*config.image_size, 3), num_classes,
                                weights=config.weights or "imagenet", finetune="head",
                                augment=resolve_augment(config.augment),
                                output_bias=output_bias, seed=config.seed)
    return model


def backbone_run_record(config) -> dict:
    """What ``config.json`` keeps: backbone, weights source (file and sha256), schedule."""
    from longtail.backbones import resolve_weights

    _, weights = resolve_weights(BACKBONES[config.model], config.weights or "imagenet")
    first = head_epochs(config)
    return {"backbone": config.model, **weights,
            "schedule": {"finetune": config.finetune or "head", "head_epochs": first,
                         "finetune_epochs": config.epochs - first,
                         "finetune_learning_rate": config.learning_rate * FINETUNE_LR_SCALE,
                         "batchnorm": "inference mode in every stage"}}


def _open_backbone(model, config, steps_per_epoch: int) -> None:
    """Stage two: opens the blocks ``finetune`` names and recompiles at a lower rate."""
    import keras

    set_trainable_blocks(model.get_layer("backbone"), config.model, config.finetune)
    lr = config.learning_rate * FINETUNE_LR_SCALE
    steps = (config.epochs - head_epochs(config)) * steps_per_epoch
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(steps, 1))
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=lr,
                                                   weight_decay=config.weight_decay),
                  loss=model.loss, metrics=["accuracy"])


def fit_in_stages(model, config, train_loader, initial_epoch: int, **fit_kwargs) -> dict:
    """Runs what is left of the head stage, then the fine-tuning stage.

    Returns:
        Keras' history of this call (both stages' epochs, in order).
    """
    first = head_epochs(config)
    history: dict = {}
    if initial_epoch < first:
        fit = model.fit(train_loader, epochs=first, initial_epoch=initial_epoch, **fit_kwargs)
        history = dict(fit.history)
        if model.stop_training:  # early stopping ended the run in the head stage
            return history
        initial_epoch = first
    if initial_epoch == first < config.epochs:
        # The checkpoint of epoch `first` was written in the head stage, so a
        # run resumed there opens the backbone as the uninterrupted run did.
        _open_backbone(model, config, len(train_loader))
    if initial_epoch < config.epochs:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(initial_epoch)
        fit = model.fit(train_loader, epochs=config.epochs, initial_epoch=initial_epoch,
                        **fit_kwargs)
        for key, values in fit.history.items():
            history.setdefault(key, []).extend(values)
    return history
