"""Config sections every method shares: what the generic loop (``jot.train.loop``) and the
optimiser (``jot.methods._common.optimizer``) read."""
import ml_collections


def train(**fields) -> ml_collections.ConfigDict:
    """``config.train`` with the loop's defaults; ``fields`` add or override entries
    (learning rates are per method: ``lr`` or ``lr_map``/``lr_potential``)."""
    t = ml_collections.ConfigDict()
    t.steps = 10_000
    t.batch_size = 64
    t.b1 = 0.9  # Adam
    t.b2 = 0.999
    t.lr_schedule = "constant"  # constant | cosine
    t.lr_final_fraction = 0.0  # cosine: final rate as a fraction of the initial one
    t.grad_clip = 0.0  # global-norm clip; 0 = off
    t.ema = 0.999  # EMA decay of the evaluated parameters; 0 = off
    t.log_every = 100
    t.eval_every = 0  # 0 = only at the end
    t.checkpoint_every = 1_000
    t.keep_checkpoints = 2
    t.progress = True
    t.steps_per_call = 1  # train steps per jitted call (a lax.scan); does not change results
    t.update(fields)
    return t


def mesh() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.data = -1  # devices on the data axis; -1 = all not on fsdp
    m.fsdp = 1  # devices a parameter is split over (the state's arrays of >= fsdp_min_size elements)
    m.fsdp_min_size = 2**16  # smaller arrays stay replicated
    return m
