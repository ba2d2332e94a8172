"""The one generic training loop: any ``jot.methods`` module, any ``jot.data`` dataset.

Resume order (``train`` is idempotent: run it again on the same workdir to continue):

1. build the dataset, the mesh and the abstract state (``jax.eval_shape`` of ``init``);
2. if ``workdir/checkpoints`` has a step, restore it into the state's shardings
   (``state_shardings``: the parameter rule of ``jot.sharding``), otherwise run ``init``
   jitted with those shardings as ``out_shardings``;
3. continue from ``state.step``: batches are a pure function of the step index
   (``jot.data.base``), so the data stream resumes exactly without iterator state;
4. per-step randomness is ``fold_in(state.rng, state.step)`` inside the method.

Dispatch: ``train.steps_per_call = N`` runs ``N`` consecutive steps in one jitted
``lax.scan`` (the state donated, its shardings kept). A call never crosses a step where the
loop logs, checkpoints, evaluates or may stop (multiples of ``log_every``,
``checkpoint_every``, ``eval_every`` and ``train.steps``): a shorter run up to such a step is
taken one step per call, so at most two programs are compiled (``N`` steps and one step).
The scan runs the same step function on the same batches, so ``N`` does not change results
(``records.NEUTRAL_FIELDS``). Metrics are reduced on device: the logged values are the last
step's, and the NaN guard sees every step (the first step with a non-finite metric and which
metrics, carried across calls on device and read at log steps). Datasets with
``device_sampling`` (``jot.data.base``; the 2D samplers with ``config.data.sampler="device"``)
draw each step's batch inside the jitted call from the traced step index and constrain it to
the mesh's batch sharding; other datasets' host batches are stacked ``[N, ...]`` and fed to
the scan.

Readers of a trained model (``evaluate``, ``--mode=translate``, notebooks) call
``restore(workdir)``: the recorded config, the method and the checkpoint restored into the
same shardings as step 2, without a ``Trainer``.

A workdir holds ``config.json``, ``metrics.jsonl`` (one JSON line per log step),
``checkpoints/`` and, after evaluation, ``metrics.json`` plus the method's artifacts.

Run safety (``train`` and ``evaluate``):

- config ranges are checked before any work (``records.validate_config``);
- the workdir is locked for the call; a second process on it stops at once
  (``jot.train.workdir``);
- ``config.json`` is the record of the run: resuming a workdir that has a checkpoint with a
  config that differs in a result-changing field is refused with the list of differences;
  ``evaluate`` uses the record and warns about ignored differences (``jot.train.records``);
- ``metrics.jsonl`` is trimmed to the restored step, so a crash between a log line and the
  next checkpoint never leaves repeated steps;
- SIGINT/SIGTERM let the step in flight finish, save a checkpoint at that step and raise
  ``Interrupted`` (the previous handlers are restored afterwards; a second SIGINT raises
  ``KeyboardInterrupt`` at once). A ``KeyboardInterrupt`` raised by code rather than by a
  signal propagates unchanged and saves nothing beyond the last checkpoint;
- user mistakes raise ``jot.errors.UserError`` with the value, what was expected and the fix.
"""
import dataclasses
import functools
import inspect
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jot import data as jot_data
from jot import files, methods
from jot import sharding
from jot.errors import UserError
from jot.train import records
from jot.train import workdir as workdir_lib
from jot.train.checkpoint import Checkpointer


class TrainingDiverged(FloatingPointError):
    """Raised when a loss or the parameters stop being finite; the last good checkpoint is kept."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped ``train`` after a completed step, whose checkpoint was saved.

    ``signum`` is the signal, ``step`` the saved step, ``path`` its checkpoint directory and
    ``exit_code`` the shell convention ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, step: int, path: str):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {path}; re-run the same command to resume")
        self.signum, self.step, self.path = signum, step, path
        self.exit_code = 128 + signum


class _StopSignals:
    """Within ``with``: SIGINT and SIGTERM set ``signum`` instead of stopping the process (a
    second SIGINT raises ``KeyboardInterrupt``); the previous handlers come back on exit.
    Installs nothing outside the main thread."""

    def __init__(self):
        self.signum, self._previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def requested(self, done: int, every: int) -> bool:
        """Whether to stop after step ``done``; several processes agree at multiples of ``every``."""
        if jax.process_count() == 1:
            return self.signum is not None
        if done % every:
            return False
        from jax.experimental import multihost_utils

        received = int(np.max(multihost_utils.process_allgather(np.int32(self.signum or 0))))
        self.signum = self.signum or received or None
        return bool(received)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False


def batch_counts(method, config) -> dict[str, int] | None:
    """Host batches per step for each key, from the method's ``batches_per_step`` (see
    ``jot.methods.base``): ``None`` (one batch, no stacking), an int ``K`` for every key, or a
    dict ``{key: count}``."""
    if not hasattr(method, "batches_per_step"):
        return None
    counts = method.batches_per_step(config)
    if isinstance(counts, int):
        counts = {"x": counts, "y": counts}
    bad = {k: c for k, c in counts.items() if int(c) < 1}
    if bad:
        raise ValueError(f"{config.method}.batches_per_step returned counts {bad}; each must be >= 1.")
    return {k: int(c) for k, c in counts.items()}


def _accepts_keys(dataset) -> bool:
    try:
        return "keys" in inspect.signature(dataset.train_batch).parameters
    except (TypeError, ValueError):
        return False


def _host_batch(dataset, step: int, counts: dict[str, int] | None, lazy: bool | None = None) -> dict:
    """The host batch of ``step``: ``dataset.train_batch(step)``, or for stacked methods, for
    each key ``k``, the ``[counts[k], B, ...]`` stack of its dataset batches
    ``step * counts[k] + j`` (so every key reads its own stream contiguously). Datasets whose
    ``train_batch`` takes ``keys`` draw only the keys each index needs."""
    if counts is None:
        return dataset.train_batch(step)
    wanted: dict[int, list[str]] = {}
    for key, c in counts.items():
        for j in range(c):
            wanted.setdefault(step * c + j, []).append(key)
    lazy = _accepts_keys(dataset) if lazy is None else lazy
    drawn = {i: dataset.train_batch(i, keys=tuple(keys)) if lazy else dataset.train_batch(i)
             for i, keys in wanted.items()}
    return {key: np.stack([drawn[step * c + j][key] for j in range(c)]) for key, c in counts.items()}


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def get_method(config: ml_collections.ConfigDict):
    """The ``jot.methods`` module named by ``config.method``; an unknown name is a ``UserError``."""
    try:
        return methods.get(config.method)
    except ValueError as e:
        raise UserError(str(e)) from e


def _checked_method(config: ml_collections.ConfigDict):
    """``get_method`` with the method's own config checks run (``check_config``): what a
    run that trains or restores the method needs before it touches the workdir."""
    method = get_method(config)
    if hasattr(method, "check_config"):
        method.check_config(config)
    return method


def _sharded_batch(mesh, dataset, step: int, counts: dict[str, int] | None, lazy: bool | None = None) -> dict:
    """The host batch of ``step`` (``_host_batch``) as global arrays split over ``data``."""
    return sharding.shard_batch(mesh, _host_batch(dataset, step, counts, lazy),
                                batch_axis=0 if counts is None else 1)


def _stacked_sharded_batches(mesh, dataset, start: int, n: int, counts: dict[str, int] | None,
                             lazy: bool | None = None) -> dict:
    """The host batches of steps ``start .. start + n - 1`` stacked on a new leading axis
    (``[n, ...]``, what ``lax.scan`` slices) as global arrays split over ``data``."""
    batches = [_host_batch(dataset, step, counts, lazy) for step in range(start, start + n)]
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    return sharding.shard_batch(mesh, stacked, batch_axis=1 if counts is None else 2)


def uses_device_batches(dataset) -> bool:
    """Whether the loop draws ``dataset``'s batches inside the jitted step (``jot.data.base``)."""
    return bool(getattr(dataset, "device_sampling", False)) and hasattr(dataset, "device_batch")


def device_batch(dataset, mesh, step, counts: dict[str, int] | None) -> dict:
    """Traceable: the batch of (traced) ``step`` drawn by ``dataset.device_batch``, stacked as
    ``_host_batch`` stacks host batches (key ``k``: dataset batches ``step * counts[k] + j``),
    constrained to the mesh's batch sharding so each device draws its own rows."""
    if counts is None:
        batch, axis = dataset.device_batch(step), 0
    else:
        batch, axis = {}, 1
        for key, c in counts.items():
            draw = lambda i, key=key: dataset.device_batch(i, keys=(key,))[key]  # noqa: E731
            batch[key] = jax.vmap(draw)(step * c + jnp.arange(c, dtype=jnp.int32))
    return {k: jax.lax.with_sharding_constraint(v, sharding.batch_sharding(mesh, v.ndim, axis))
            for k, v in batch.items()}


def _no_divergence(metric_shapes: dict) -> dict:
    """The NaN guard's record carried across calls: ``first`` (the first completed step with a
    non-finite metric, -1 while none) and ``bad`` (per floating metric: non-finite at any step)."""
    bad = {k: jnp.zeros((), bool) for k, v in metric_shapes.items() if jnp.issubdtype(v.dtype, jnp.floating)}
    return {"first": jnp.full((), -1, jnp.int32), "bad": bad}


def _guard(record: dict, metrics: dict, done) -> dict:
    """``record`` updated with the metrics of the step that completed step ``done``."""
    nonfinite = {k: ~jnp.all(jnp.isfinite(metrics[k])) for k in record["bad"]}
    any_bad = jnp.any(jnp.stack(list(nonfinite.values()))) if nonfinite else jnp.array(False)
    first = jnp.where((record["first"] < 0) & any_bad, jnp.asarray(done, jnp.int32), record["first"])
    return {"first": first, "bad": {k: record["bad"][k] | nonfinite[k] for k in record["bad"]}}


def _boundary(done: int, tc) -> int:
    """The first step after ``done`` at which the loop logs, checkpoints, evaluates or ends."""
    nxt = min((done // every + 1) * every for every in (tc.log_every, tc.checkpoint_every, tc.eval_every) if every)
    return min(nxt, tc.steps)


def load_pretrained(method, config: ml_collections.ConfigDict, mesh):
    """The method's frozen pretrained networks (``load_pretrained``, see ``jot.methods.base``)
    placed on ``mesh`` by the parameter rule, or None for methods without them (or when the
    method's hook returns None for this config)."""
    if not hasattr(method, "load_pretrained"):
        return None
    tree = method.load_pretrained(config)
    if tree is None:
        return None
    return jax.device_put(tree, sharding.tree_shardings(tree, mesh, min_size=sharding.min_shard_size(config)))


def _init_fn(method, config: ml_collections.ConfigDict, pretrained):
    """``(rng, batch[, pretrained]) -> state`` and its extra arguments."""
    if pretrained is None:
        return functools.partial(method.init, config), ()
    return (lambda rng, batch, pre: method.init(config, rng, batch, pre)), (pretrained,)


def attach(state, pretrained):
    """``state`` with its ``pretrained`` field filled (unchanged when there is none)."""
    return state if pretrained is None else state.replace(pretrained=pretrained)


def detach(state):
    """``state`` without its pretrained networks: what a checkpoint holds."""
    return state.replace(pretrained=None) if getattr(state, "pretrained", None) is not None else state


def state_shardings(method, config: ml_collections.ConfigDict, mesh, batch: dict, pretrained=None):
    """``(abstract, shardings)`` of the method's train state: ``jax.eval_shape`` of ``init`` on
    ``batch`` (nothing is computed) and one ``NamedSharding`` per leaf by the parameter rule
    (``jot.sharding.param_spec``; optimiser moments and EMA have their parameter's shape, so they
    follow it). The pretrained networks are not part of it (``detach``)."""
    init, extra = _init_fn(method, config, pretrained)
    abstract = detach(jax.eval_shape(init, jax.random.PRNGKey(config.seed), batch, *extra))
    return abstract, sharding.tree_shardings(abstract, mesh, min_size=sharding.min_shard_size(config))


def for_evaluation(state):
    """``state`` as the host-side ``evaluate`` functions take it: unchanged in a single process;
    gathered into numpy on every process when its arrays span several processes."""
    return state if jax.process_count() == 1 else sharding.to_host(state)


class Trainer:
    """Holds what a training run needs: method, dataset, mesh, the state's shardings and the
    checkpoints."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, dataset=None, *, create: bool = False):
        sharding.initialize_distributed()
        self.config, self.workdir = config, workdir
        self.method = _checked_method(config)
        self.dataset = dataset if dataset is not None else jot_data.build(config)
        self.mesh = sharding.make_mesh(config)
        self.counts = batch_counts(self.method, config)
        self._lazy = _accepts_keys(self.dataset)
        self.on_device = uses_device_batches(self.dataset)
        self.replicated = sharding.replicated(self.mesh)
        self.pretrained = load_pretrained(self.method, config, self.mesh)
        self._pretrained_shardings = jax.tree.map(lambda x: x.sharding, self.pretrained)
        batch0 = self.batch(0)  # also checks that the batch divides over the mesh
        self._batch_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch0)
        self.abstract, self.shardings = state_shardings(self.method, config, self.mesh, batch0, self.pretrained)
        self.checkpoints = Checkpointer(
            os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints, create=create
        )

    def batch(self, step: int) -> dict:
        return _sharded_batch(self.mesh, self.dataset, step, self.counts, self._lazy)

    def initial_state(self):
        """Restores the latest checkpoint, or initialises (see the resume order above), into
        ``self.shardings``; the pretrained networks are attached."""
        latest = self.checkpoints.latest_step()
        if latest is None:
            init_fn, extra = _init_fn(self.method, self.config, self.pretrained)
            init = jax.jit(lambda *a: detach(init_fn(*a)), out_shardings=self.shardings)
            state = init(jax.random.PRNGKey(self.config.seed), self.batch(0), *extra)
        else:
            state = self.checkpoints.restore(latest, sharding.with_shardings(self.abstract, self.shardings))
        return attach(state, self.pretrained)

    def save(self, step: int, state) -> None:
        self.checkpoints.save(step, detach(state))

    def step_fn(self):
        """The jitted ``train_step``: the state is donated and stays in ``self.shardings``."""
        out = attach(self.shardings, self._pretrained_shardings)
        return jax.jit(functools.partial(self.method.train_step, self.config), donate_argnums=0,
                       out_shardings=(out, self.replicated))

    def metric_shapes(self) -> dict:
        """Shapes and dtypes of ``train_step``'s metrics (traced once, nothing computed)."""
        state = attach(self.abstract, self.pretrained)
        return jax.eval_shape(functools.partial(self.method.train_step, self.config), state,
                              self._batch_shapes)[1]

    def no_divergence(self) -> dict:
        """The NaN guard's initial record for ``call_fn`` (replicated)."""
        return jax.device_put(_no_divergence(self.metric_shapes()), self.replicated)

    def call_fn(self, n: int):
        """``n`` consecutive train steps in one jitted call (a ``lax.scan`` when ``n > 1``):
        ``(state, record, step[, batches]) -> (state, record, metrics)``.

        ``step`` is the index of the first step; ``batches`` (host datasets only) is the batch
        of that step for ``n == 1`` and the ``[n, ...]`` stack of the ``n`` steps' batches
        otherwise (``_stacked_sharded_batches``); device datasets draw them inside. ``record``
        is the NaN guard's (``_guard``); ``metrics`` are the last step's. The state and the
        record are donated; the state stays in ``self.shardings``."""
        method, config, counts, on_device = self.method, self.config, self.counts, self.on_device
        mesh, dataset = self.mesh, self.dataset

        def one(state, record, step, batch):
            if on_device:
                batch = device_batch(dataset, mesh, step, counts)
            state, metrics = method.train_step(config, state, batch)
            return state, _guard(record, metrics, step + 1), metrics

        def run(state, record, step, batches=None):
            if n == 1:
                return one(state, record, step, batches)

            def body(carry, xs):
                state, record = carry
                state, record, metrics = one(state, record, *xs)
                return (state, record), metrics

            xs = (step + jnp.arange(n, dtype=jnp.int32), batches)
            (state, record), stacked = jax.lax.scan(body, (state, record), xs)
            return state, record, jax.tree.map(lambda v: v[-1], stacked)

        out = attach(self.shardings, self._pretrained_shardings)
        return jax.jit(run, donate_argnums=(0, 1), out_shardings=(out, self.replicated, self.replicated))

    def call_args(self, step: int, n: int) -> tuple:
        """The arguments after ``(state, record)`` of ``call_fn(n)`` for steps ``step ..``."""
        if self.on_device:
            return (np.int32(step),)
        if n == 1:
            return np.int32(step), self.batch(step)
        return np.int32(step), _stacked_sharded_batches(self.mesh, self.dataset, step, n, self.counts, self._lazy)

    def evaluate(self, state, workdir: str | None) -> dict:
        if not hasattr(self.method, "evaluate"):
            return {}
        return self.method.evaluate(self.config, for_evaluation(state), self.dataset.eval_data(), workdir)


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    files.write_json(os.path.join(workdir, records.CONFIG_FILE), json.loads(config.to_json_best_effort()))


def train(config: ml_collections.ConfigDict, workdir: str, *, dataset=None):
    """Trains ``config.method`` for ``config.train.steps`` steps in ``workdir``; returns the final state.

    Evaluates at the end (and every ``train.eval_every`` steps when > 0), writing
    ``metrics.json``. Raises ``TrainingDiverged`` (naming the step and the last good
    checkpoint) when the loss or the parameters become NaN/inf, ``Interrupted`` after saving
    a checkpoint on SIGINT/SIGTERM, and ``UserError`` for bad config values, a locked or
    unwritable workdir, a config that differs from the run's ``config.json`` (when the
    workdir has a checkpoint; without one the run starts over with this config) and
    checkpoints that cannot be restored (see the module docstring).
    """
    records.validate_config(config)
    sharding.initialize_distributed()
    is_main = jax.process_index() == 0
    workdir_lib.make(workdir)
    with workdir_lib.lock(workdir, enabled=is_main):
        return _train(config, workdir, dataset, is_main)


def _train(config: ml_collections.ConfigDict, workdir: str, dataset, is_main: bool):
    saved = records.read_config(workdir)
    probe = Checkpointer(os.path.join(workdir, "checkpoints"))
    has_checkpoint = probe.latest_step() is not None
    probe.close()
    if has_checkpoint and saved is not None:
        records.check_resume(saved, config, workdir)
    elif has_checkpoint:
        records.warn(f"{workdir} has checkpoints but no {records.CONFIG_FILE}; resuming without checking that "
                     "this config is the one they were trained with.")
    trainer = Trainer(config, workdir, dataset, create=True)
    try:
        if is_main:
            _write_config(config, workdir)
        state = trainer.initial_state()
        start = int(jax.device_get(state.step))
        metrics_path = os.path.join(workdir, "metrics.jsonl")
        if is_main:
            files.trim_jsonl(metrics_path, start)
        state = _train_steps(config, trainer, state, start, metrics_path, is_main)
        final = trainer.evaluate(state, workdir if is_main else None)
        if is_main and final:
            files.write_json(os.path.join(workdir, "metrics.json"), {"step": int(jax.device_get(state.step)), **final})
    finally:
        trainer.checkpoints.close()
    return state


def _train_steps(config, trainer: Trainer, state, start: int, metrics_path: str, is_main: bool):
    """Steps ``start .. train.steps`` with logging, checkpoints, the NaN guard and signal stops,
    ``train.steps_per_call`` steps per jitted call (see the module docstring)."""
    tc = config.train
    per_call = int(tc.get("steps_per_call", 1))
    calls = {}
    # XLA's CPU collectives across processes (gloo) can deadlock when two steps' executions
    # overlap on a process with several devices; such runs (tests, laptops) finish each call
    # before dispatching the next. Accelerators keep asynchronous dispatch.
    serial = jax.process_count() > 1 and jax.default_backend() == "cpu" and jax.local_device_count() > 1
    last_good = trainer.checkpoints.latest_step()

    progress = None
    if is_main and tc.progress and start < tc.steps:
        from tqdm.auto import tqdm

        progress = tqdm(total=tc.steps, initial=start, desc=f"{config.method} {config.data.name}", dynamic_ncols=True)

    record = trainer.no_divergence() if start < tc.steps else None
    t0, done_since_log = time.perf_counter(), 0
    step = start
    try:
        with _StopSignals() as stop:
            while step < tc.steps:
                n = min(per_call, _boundary(step, tc) - step)
                n = n if n == per_call else 1  # two programs at most: N steps and one step
                if n not in calls:
                    calls[n] = trainer.call_fn(n)
                state, record, metrics = calls[n](state, record, *trainer.call_args(step, n))
                if serial:
                    jax.block_until_ready(state)
                done = step = step + n
                done_since_log += n
                if done % tc.log_every == 0 or done == tc.steps:
                    host, guard = jax.device_get((metrics, record))
                    host = {k: float(v) for k, v in host.items()}
                    if int(guard["first"]) >= 0:
                        bad = sorted(k for k, v in guard["bad"].items() if v)
                        raise TrainingDiverged(
                            f"non-finite {bad} from step {int(guard['first'])}, detected at step {done}; last good "
                            f"checkpoint: step {last_good} in {trainer.checkpoints.directory}. Lower the learning "
                            "rates or raise the regulariser weight."
                        )
                    elapsed = time.perf_counter() - t0
                    record_line = {"step": done, "steps_per_sec": done_since_log / max(elapsed, 1e-9), **host}
                    if is_main:
                        files.append_jsonl(metrics_path, record_line)
                    if progress is not None:
                        progress.update(done_since_log)
                        progress.set_postfix({k: f"{v:.3g}" for k, v in host.items() if k.startswith("loss")})
                    t0, done_since_log = time.perf_counter(), 0
                stopping = stop.requested(done, tc.log_every)
                if done % tc.checkpoint_every == 0 or done == tc.steps or stopping:
                    if not bool(_all_finite(detach(state))):
                        raise TrainingDiverged(
                            f"parameters became non-finite by step {done}; last good checkpoint: step {last_good} in "
                            f"{trainer.checkpoints.directory}."
                        )
                    trainer.save(done, state)
                    last_good = done
                if stopping:
                    raise Interrupted(stop.signum, done, os.path.join(trainer.checkpoints.directory, str(done)))
                if tc.eval_every and done % tc.eval_every == 0 and done != tc.steps:
                    ev = trainer.evaluate(state, None)
                    if is_main:
                        files.append_jsonl(metrics_path, {"step": done, **{f"eval/{k}": v for k, v in ev.items()}})
    finally:
        if progress is not None:
            progress.close()
    return state


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, dataset=None) -> dict:
    """Restores the latest checkpoint of ``workdir`` and evaluates it (writes ``metrics.json``).

    Evaluates with the run's recorded ``config.json`` (its ``eval.*`` and ``mesh.*`` fields
    come from ``config``); result-changing fields in which ``config`` differs are listed in a
    warning on stderr and ignored (``restore``). Raises ``UserFileNotFoundError`` ("no run at
    ...") and creates nothing when ``workdir`` holds no run, and ``UserError`` when the
    workdir is locked by a training run.
    """
    workdir_lib.require_run(workdir)
    sharding.initialize_distributed()
    is_main = jax.process_index() == 0
    with workdir_lib.lock(workdir, enabled=is_main):
        model = restore(workdir, config=config, dataset=dataset)
        if not hasattr(model.method, "evaluate"):
            metrics = {}
        else:
            metrics = model.method.evaluate(model.config, for_evaluation(model.state), model.dataset.eval_data(),
                                            workdir if is_main else None)
        if is_main:
            files.write_json(os.path.join(workdir, "metrics.json"), {"step": model.step, **metrics})
    return metrics


@dataclasses.dataclass(frozen=True)
class Restored:
    """A trained model read back by ``restore``.

    ``config``: the config it was trained with (the run's ``config.json``, neutral fields
    possibly from a given config); ``state``: the method's state at checkpoint ``step``,
    placed on ``mesh`` as in training (``state_shardings``); ``method``: the ``jot.methods`` module of ``config.method``, whose
    functions take ``(config, state, ...)``; ``dataset``: the dataset whose batch 0 gave the
    state's shapes (built from ``config`` unless one was passed).
    """

    config: ml_collections.ConfigDict
    state: Any
    step: int
    method: Any
    dataset: Any
    mesh: Any


def restore(workdir: str, *, step: int | None = None, config: ml_collections.ConfigDict | None = None,
            dataset=None, mesh=None) -> Restored:
    """Reads the trained model of the run in ``workdir`` (see ``Restored``); writes nothing.

    The config is the run's record ``config.json`` (``records.read_config``). A given
    ``config`` contributes only its neutral fields (``eval.*``, ``mesh.*``, ...;
    ``records.config_for_evaluate``, which warns on stderr about the fields it ignores); a run
    without ``config.json`` is read with the given ``config`` and a warning. The checkpoint is
    ``step`` (default: the latest), restored into the shapes and dtypes of the method's
    ``init`` with the shardings training uses (``state_shardings``) on ``mesh`` (default:
    ``make_mesh(config)``).
    ``init`` is only traced (``jax.eval_shape``), but it takes a batch: its shapes come from
    batch 0 of ``dataset``, which is built from the recorded config when not given.

    Raises ``workdir.NoRun`` (a ``UserFileNotFoundError``) and creates nothing when
    ``workdir`` holds no run, no checkpoint or no checkpoint of ``step``; ``UserError`` when
    the record is missing (and no ``config`` is given) or unreadable, or when the checkpoint
    does not fit the recorded model or cannot be read (``Checkpointer.restore``).
    """
    workdir_lib.require_run(workdir)
    saved = records.read_config(workdir)
    if saved is None:
        if config is None:
            raise UserError(
                f"{workdir} has checkpoints but no {records.CONFIG_FILE}, the record of the config they were "
                "trained with; restore that file from a copy, or pass the config to restore(config=...)."
            )
        records.warn(f"{workdir} has no {records.CONFIG_FILE}; restoring with the given config.")
    elif config is None:
        config = saved
    else:
        config = records.config_for_evaluate(saved, config, workdir)
    records.validate_config(config)
    sharding.initialize_distributed()
    method = _checked_method(config)
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        steps = sorted(checkpoints.all_steps())
        if not steps:
            raise workdir_lib.NoRun(
                f"no checkpoint in {checkpoints.directory}; train first (--mode=train) or point --workdir at a "
                "finished run."
            )
        if step is None:
            step = steps[-1]
        elif int(step) not in steps:
            raise workdir_lib.NoRun(
                f"no checkpoint of step {step} in {checkpoints.directory}; it holds steps "
                f"{', '.join(map(str, steps))}."
            )
        dataset = dataset if dataset is not None else jot_data.build(config)
        mesh = mesh if mesh is not None else sharding.make_mesh(config)
        batch = _sharded_batch(mesh, dataset, 0, batch_counts(method, config))
        pretrained = load_pretrained(method, config, mesh)
        abstract, shardings = state_shardings(method, config, mesh, batch, pretrained)
        state = attach(checkpoints.restore(int(step), sharding.with_shardings(abstract, shardings)), pretrained)
    finally:
        checkpoints.close()
    return Restored(config=config, state=state, step=int(step), method=method, dataset=dataset, mesh=mesh)
