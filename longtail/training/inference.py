"""The model a run hands over: ``model.keras`` that plain Keras loads.

Training adds what inference must not need: augmentation layers (longtail's
``RandomShift``, a custom class) and a compiled loss (longtail's losses, also
custom classes). ``model.keras`` in a run folder is the trained network without
either: augmentation layers are replaced by ``Identity`` (they do nothing at
inference anyway) and the model is saved uncompiled, so
``keras.saving.load_model("run/model.keras")`` works without importing
longtail. The training model, optimizer included, lives in ``checkpoints/``
while a run can still be resumed.
"""

from __future__ import annotations

__all__ = ["inference_model", "AUGMENTATION_LAYERS"]

#: Layer classes that only act in training and are dropped from ``model.keras``.
AUGMENTATION_LAYERS = ("RandomShift", "RandomFlip", "RandomTranslation", "RandomRotation",
                       "RandomZoom", "RandomCrop", "RandomContrast", "RandomBrightness")


def inference_model(model):
    """A copy of ``model`` with augmentation layers made identities, uncompiled.

    Args:
        model: A trained functional or sequential Keras model.

    Returns:
        A new model with the same weights and the same predictions; a model
        that is neither functional nor sequential (a subclassed one) is
        returned as it is.
    """
    import keras

    def clone(layer):
        if type(layer).__name__ in AUGMENTATION_LAYERS:
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except ValueError:  # subclassed models cannot be cloned
        return model
    # clone_model compiles the copy like the original (longtail's loss);
    # a new Model over the same graph is uncompiled.
    copy = keras.Model(copy.inputs, copy.outputs, name=model.name)
    for layer in copy.layers:
        if type(layer).__name__ == "Identity" or not layer.weights:
            continue
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy
