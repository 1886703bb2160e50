"""A rarely needed computation that costs nothing on the steps that do not need it, forward or backward.

`only_when(needed, function, zeros, *tensors)` is `function(*tensors)` when the boolean
scalar `needed` is true and `zeros()` otherwise. Its gradient runs `function` again under a
tape, again only when `needed`, so the forward pass keeps none of its intermediates.

The static-capacity history layout (din_model/model/network.py) uses it for its dense fallback,
taken by the rare batch with more history entries than buffer slots. A plain
`tf.cond(fits, buffer, dense)` costs every step under XLA: the gradient of a `tf.cond` there
carries the intermediates of *both* branches out of the forward pass, filling the untaken
branch's with zeros, and the dense branch's are `[B, L, units]` activations (~80 MB written
per step at the reference preset's batch of 4096; a quarter of an XLA step on CPU).
Recomputing inside the cond branch instead does not work: the cond's gradient graph would
capture the variables' eager handles, which `cond_v2` rejects. So the condition sits inside
the custom gradient here, and the caller selects between this and its common path.

`recomputing()` tells layers that they run a second time for the same batch, so state
updates (Dice's moving statistics) happen once. `function` must be deterministic (no
dropout): the recomputation must see the values the forward pass saw.
"""
from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

_state = threading.local()


def recomputing() -> bool:
    """True while the backward pass of `only_when` traces its function again."""
    return getattr(_state, "recomputing", False)


@contextlib.contextmanager
def _recomputation():
    previous = recomputing()
    _state.recomputing = True
    try:
        yield
    finally:
        _state.recomputing = previous


def _zeros(like):
    """Zeros of a tensor's or a variable's shape (without reading the variable)."""
    return tf.zeros_like(like) if isinstance(like, tf.Tensor) else tf.zeros(like.shape, like.dtype)


def _dense(gradient, like):
    """A dense gradient of `like`'s shape (tables' gradients come as IndexedSlices; none: zeros)."""
    return _zeros(like) if gradient is None else tf.convert_to_tensor(gradient)


def only_when(needed, function, zeros, *tensors):
    """`function(*tensors)` if `needed` else `zeros()` (the same structure of tensors); its gradient
    recomputes `function` when `needed` and is zero otherwise.

    Gradients flow to the floating-point `tensors` and to the variables `function` reads;
    integer and boolean tensors (ids, masks) get none.
    """
    differentiable = [tensor.dtype.is_floating for tensor in tensors]

    @tf.custom_gradient
    def forward(*inputs):
        outputs = tf.cond(needed, lambda: function(*inputs), zeros)

        def backward(*upstream, variables=None):
            variables = list(variables or [])
            watched = [tensor for tensor, wanted in zip(inputs, differentiable) if wanted]
            targets = watched + variables

            def recomputed():
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(watched)
                    tape.watch(variables)
                    with _recomputation():
                        again = function(*inputs)
                gradients = tape.gradient(again, targets, output_gradients=list(upstream))
                return [_dense(gradient, like) for gradient, like in zip(gradients, targets)]

            gradients = tf.cond(needed, recomputed, lambda: [_zeros(like) for like in targets])
            of_watched = iter(gradients[:len(watched)])
            return [next(of_watched) if wanted else None for wanted in differentiable], gradients[len(watched):]

        return outputs, backward

    return forward(*tensors)
