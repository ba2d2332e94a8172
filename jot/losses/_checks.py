"""Shape checks shared by the loss functions (raise at trace time, with the fix)."""
import jax.numpy as jnp


def batch_matrix(name: str, a) -> None:
    """``a`` must be a batch of flattened-or-not points: rank >= 2, leading batch axis."""
    if jnp.ndim(a) < 2:
        raise ValueError(
            f"{name} must have a leading batch axis and at least one feature axis, got shape "
            f"{jnp.shape(a)}; reshape single points to [1, d]."
        )


def same_shape(name_a: str, a, name_b: str, b) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {jnp.shape(a)} and {jnp.shape(b)}; "
            "a map must return points of the shape it was given."
        )


def per_example(name: str, values, n: int) -> None:
    if jnp.shape(values) != (n,):
        raise ValueError(
            f"{name} must return one scalar per example, shape ({n},), got {jnp.shape(values)}; "
            "make the potential return [batch] (squeeze a trailing axis of size 1)."
        )


def times(t, n: int) -> None:
    if jnp.shape(t) != (n,):
        raise ValueError(f"t must have shape ({n},) (one time per example), got {jnp.shape(t)}.")
