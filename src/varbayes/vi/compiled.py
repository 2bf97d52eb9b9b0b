"""The SVI step for any model and guide, compiled as one graph (``svi.fit(..., compile=True)``).

For the guide's flat parameters λ and noise ε of shape (S, noise_dim),

    −ELBO(λ; ε) = −(1/S) Σ_s [log p(x, θ_s) − log q(θ_s | λ)],   θ_s = T(ε_s; λ)

(the IWAE bound −log (1/S) Σ_s w_s for ``estimator="iwae"``) is a pure function of
(λ, ε): :meth:`~varbayes.vi.guides.Guide.rsample_from_noise` under
``torch.func.functional_call``, the user's log joint, then
:func:`varbayes.vi.elbo.objective`. ``torch.func.grad_and_value`` gives its gradient and
value in one function, and ``torch.compile(fullgraph=True)`` turns that into one graph:
no autograd graph is recorded and no Python runs per operation at run time. ε is drawn
outside the graph from the run's generator, by the same call as the eager path's, so the
two follow the same trajectory to rounding.

With the default optimizer (``fit``'s own ``torch.optim.Adam``, no scheduler) Adam's
update goes into the same graph:

    t ← t + 1,  m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
    λ ← λ − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε),

(:func:`varbayes.adam.adam_update`) written into the optimizer's own state tensors
(``step``, ``exp_avg``, ``exp_avg_sq``), so that its ``state_dict`` resumes the run
eagerly or compiled alike; it equals torch's fused Adam to rounding and halves a small
model's step (48 against 109 µs on eight schools). Any other optimizer, or a scheduler,
steps eagerly on ``flat.grad``.

With Adam in the graph, ``sync_every`` steps (one chunk of the fit's loop) run as one call:
``torch.while_loop`` over that step, with the chunk's noise (drawn beforehand, the eager
path's stream: one call of the sampler where a step's noise has fewer than 16 values,
one call a step otherwise; see :func:`_noise_buffer`) and the ELBO values carried through
the loop, compiled with inductor's C++ wrapper, so that no Python runs between steps
(2-6x the steps/s of one step a call on the posteriordb models: 17-110k steps/s). The
data tensors of a :class:`~varbayes.vi.model.Model` enter the loop as inputs (a tensor
the loop body captures from a closure and views inside the gradient trips a
torch.compile bug, and so does ``torch.linalg.cholesky`` with its gradient
(``cholesky_ex`` compiles); a model that does either, or any other loop failure, falls
back to one step a call). The loop computes out of place: a call whose ELBO or parameters come
out non-finite (checked in the graph), or which raises, writes nothing back, and its
steps are replayed one a call on the same noise, so that the failure is reported at the
step where the eager path reports it.
Measured on CPUs only; on a GPU the loop reads its condition on the host each step.

Inductor's loop allocates each intermediate buffer of the step afresh every iteration
(20-50 small tensors on the posteriordb models), and glibc's aligned ``malloc`` is slow
at that: about half of a small model's step. ``svi.fit`` therefore runs the compiled loop
on a caching CPU allocator (:mod:`varbayes.cpu_cache`: 1.1-1.7x the steps/s, the same
steps); preloading tcmalloc or jemalloc (``LD_PRELOAD``) helps as much or more, as a
process-wide choice left to the user (README, BENCHMARKS.md).

It serves the full batch, the pathwise and IWAE estimators and the guides of
:mod:`varbayes.vi.guides`; a model that cannot be traced as one graph (Python control flow
on tensor values, a call torch.compile does not support) is refused at set-up with the
compiler's reason.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from varbayes.adam import adam_state, adam_update, bias_corrections
from varbayes.vi.drawn import randn
from varbayes.vi.elbo import objective
from varbayes.vi.guides import Guide
from varbayes.vi.model import Model, no_validation

__all__ = ["CompiledStep", "NOISE_BYTES"]

#: The most memory a call's noise buffer takes (steps a call × S × noise_dim values):
#: a large model runs its chunk in several calls rather than hold 100 steps of noise.
NOISE_BYTES = 64 * 2**20


#: Inductor's options for the loop: the C++ wrapper runs it without Python between steps.
LOOP_OPTIONS = {"cpp_wrapper": True}
#: Where every data tensor has at most SMALL_DATA values, inductor's decompose_mm_pass as
#: well: it writes a product with one row (θ of one particle times a design matrix, and
#: its gradient) as a fused multiply-sum instead of an external BLAS call through
#: torch's dispatcher, twice a step. Measured (BENCHMARKS.md): mesquite (46 × 7) 59k →
#: 77-80k steps/s; nes (701 × 9) 72k → 85k with tcmalloc but 49-52k → 34k or 57k with
#: glibc's malloc, in different processes; so only for small data.
SMALL_DATA = 4096


class _FromNoise(nn.Module):
    """``guide.rsample_from_noise`` as a module's forward, for ``functional_call``."""

    def __init__(self, guide: Guide):
        super().__init__()
        self.guide = guide

    def forward(self, eps):
        return self.guide.rsample_from_noise(eps)


def _data_tensors(model) -> dict:
    """The tensors among a :class:`Model`'s data (inputs of the compiled loop); {} for any
    other callable."""
    if not isinstance(model, Model) or not model.data:
        return {}
    return {k: v for k, v in model.data.items() if isinstance(v, torch.Tensor)}


class CompiledStep:
    """The compiled SVI step of ``model`` and ``guide``: (λ, ε) ↦ ∇λ(−ELBO), −ELBO, and
    with ``adam_in_graph`` the default Adam's update of λ in the same graph, run up to
    ``chunk`` steps a call (:meth:`steps`, :attr:`steps_per_call`).

    Raises ``ValueError`` naming what stands in the way: a guide that is not a
    :class:`~varbayes.vi.guides.Guide`, an estimator other than pathwise or IWAE,
    ``stl``, minibatches, or a model the compiler cannot trace as one graph.
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        guide: nn.Module,
        num_particles: int,
        optimizer: torch.optim.Optimizer,
        *,
        estimator: str | None = None,
        stl: bool = False,
        batch_size: int | None = None,
        adam_in_graph: bool = False,
        chunk: int = 1,
    ):
        if not isinstance(guide, Guide):
            raise ValueError(
                "compile=True needs a varbayes.vi guide (MeanFieldNormal, FullRankNormal, "
                f"LowRankNormal); got {type(guide).__name__}"
            )
        estimator = "pathwise" if estimator is None else estimator
        if estimator not in ("pathwise", "iwae") or stl:
            raise ValueError(
                "compile=True needs estimator='pathwise' or 'iwae' without stl; got "
                f"estimator={estimator!r}, stl={stl}"
            )
        if batch_size is not None:
            raise ValueError(
                "compile=True compiles the full-batch ELBO; got batch_size="
                f"{batch_size} (minibatches run eagerly: pass compile=False)"
            )
        self.guide = guide
        self.shape = (num_particles, guide.noise_dim)
        self.adam_in_graph = adam_in_graph
        self.chunk = chunk
        # steps a call: the chunk, or fewer when a chunk's noise would pass NOISE_BYTES
        itemsize = guide.flat.element_size()
        self.rows = max(1, min(chunk, NOISE_BYTES // (num_particles * guide.noise_dim * itemsize)))
        self._key = (
            model, guide, num_particles, estimator, stl, batch_size, adam_in_graph, chunk,
        )  # fmt: skip
        self._flat = guide.flat.detach()  # λ's storage, updated in place by the graph
        self._data = _data_tensors(model)
        self._eps, self._block = _noise_buffer(self.rows, self.shape, self._flat)
        self._rows = self._eps.unbind(0)
        #: rows of _eps drawn for a call that failed, not yet taken by :meth:`step`
        self._pending = self._taken = 0
        self._n: dict[int, torch.Tensor] = {}  # the step counts of the calls, as tensors
        adapter = _FromNoise(guide)

        def neg_elbo(flat, eps, data):
            # the model reads its data tensors from the arguments (see _data_tensors)
            m = model.rebind(data) if data else model
            theta, log_q = torch.func.functional_call(adapter, {"guide.flat": flat}, (eps,))
            return -objective(m(theta), log_q, estimator=estimator)

        grad_and_value = torch.func.grad_and_value(neg_elbo)

        def adam_steps(flat, eps, n, data, m, v, t, lr, beta1, beta2, adam_eps):
            """n ≤ chunk steps of Adam on noise eps[0..n): (λ, m, v, t, −ELBO values, ok),
            ok: whether the values and λ are all finite (the values past n are zeros)."""
            values = eps.new_zeros(eps.shape[0])

            def cond(i, flat, m, v, t, values):
                return i < n

            def body(i, flat, m, v, t, values):
                row = i.reshape(1)
                grad, neg = grad_and_value(flat, eps.index_select(0, row).squeeze(0), data)
                t = t + 1
                # the bias corrections in double, as torch's Adam (λ is small here)
                c1, c2 = bias_corrections(t.to(torch.float64), lr, beta1, beta2)
                c1, c2 = c1.to(flat.dtype), c2.to(flat.dtype)
                flat, m, v = adam_update(flat, grad, m, v, c1, c2, beta1, beta2, adam_eps)
                return i + 1, flat, m, v, t, values.index_copy(0, row, neg.reshape(1))

            i = torch.zeros((), dtype=torch.int64, device=flat.device)
            flat, m, v, t, values = torch.while_loop(cond, body, (i, flat, m, v, t, values))[1:]
            ok = torch.isfinite(values).all() & torch.isfinite(flat).all()
            return flat, m, v, t, values, ok

        # isolate_recompiles: every CompiledStep keeps its own dynamo cache (they all
        # compile the same code, and a shared cache would allow only 8 fits a process)
        options = dict(fullgraph=True, dynamic=False, isolate_recompiles=True)
        self._loop = self._fn = None
        #: why the steps run one a call although Adam is in the graph (None: they don't)
        self.loop_error: str | None = None
        if adam_in_graph:
            loop_options = dict(LOOP_OPTIONS)
            if all(x.numel() <= SMALL_DATA for x in self._data.values()):
                loop_options["post_grad_fusion_options"] = {"decompose_mm_pass": {}}
            self._loop = torch.compile(adam_steps, options=loop_options, **options)
            try:
                self.check(optimizer)
            except ValueError as exc:  # e.g. the closure bug above: one step a call
                self._loop = None
                self.loop_error = str(exc.__cause__ or exc).splitlines()[0]
        if self._loop is None:
            self._fn = torch.compile(grad_and_value, **options)
            self.check(optimizer)
        self.adam_in_graph = self._loop is not None

    @property
    def steps_per_call(self) -> int:
        """The steps of one call of the compiled loop (the chunk, or fewer where its noise
        would pass :data:`NOISE_BYTES`); 1 when one step a call."""
        return self.rows if self._loop is not None else 1

    def _adam_state(self, optimizer) -> tuple:
        """(m, v, t, lr, β₁, β₂, ε): the default Adam's state tensors for λ (created as
        torch's Adam creates them, if it has not stepped yet) and its settings."""
        state = adam_state(optimizer, self.guide.flat)
        group = optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        return (
            state["exp_avg"], state["exp_avg_sq"], state["step"],
            float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
        )  # fmt: skip

    def check(self, optimizer: torch.optim.Optimizer) -> None:
        """One call on zero noise with dynamo's guards evaluated, on copies of λ and of
        Adam's state (no side effect): compiles at set-up (so that a failure names the
        model there), and at the start of every later fit that reuses this step recompiles
        if the model or the settings changed in a way the guards see (a Python number it
        reads, a tensor's shape, the learning rate); the loop then skips the guards."""
        flat = self._flat.clone()
        self._pending = self._taken = 0  # a new fit: no noise left over from the last one
        try:
            with no_validation():
                if self._loop is not None:
                    m, v, t, *settings = self._adam_state(optimizer)
                    eps = _padded_zeros(self.rows, self.shape, flat)
                    one = torch.ones((), dtype=torch.int64, device=flat.device)
                    self._loop(flat, eps, one, self._data, m, v, t, *settings)
                else:
                    self._fn(flat, flat.new_zeros(self.shape), self._data)
        except Exception as exc:  # the compiler's own exception types are private
            raise ValueError(
                "compile=True: the model could not be compiled as one graph "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "pass compile=False"
            ) from exc

    def matches(
        self, model, guide, num_particles, *, estimator=None, stl=False, batch_size=None,
        adam_in_graph=False, chunk=1,
    ) -> bool:  # fmt: skip
        """Whether this is the compiled step of these very objects and settings."""
        estimator = "pathwise" if estimator is None else estimator
        m, g, *setting = self._key
        return (
            m is model
            and g is guide
            and setting == [num_particles, estimator, stl, batch_size, adam_in_graph, chunk]
        )

    def step(self, generator: torch.Generator | None, optimizer) -> torch.Tensor:
        """Draw ε (or take the next row left by a failed :meth:`steps` call) and take one
        step: Adam in the graph (a loop of one step), or ∇λ(−ELBO) into ``flat.grad`` and
        ``optimizer.step()``. Returns the ELBO estimate."""
        if self._loop is not None:
            if self._taken < self._pending:  # the failed call's rows, in order
                if self._taken:
                    self._rows[0].copy_(self._rows[self._taken])  # row 0 is taken
                self._taken += 1
            else:
                self._pending = self._taken = 0
                self._draw(generator, 1)
            return self._run(self._eps, 1, optimizer, check=False)[0][0]
        flat = self._flat
        grad, neg = self._fn(flat, randn(self.shape, generator, flat), self._data)
        self.guide.flat.grad = grad
        optimizer.step()
        return -neg

    def steps(self, generator: torch.Generator | None, optimizer, k: int):
        """``k`` ≤ :attr:`steps_per_call` steps in one call of the compiled loop; returns their ELBO
        estimates ``(k,)``, or None (λ and Adam's state as before the call) when there is
        no loop, or the call raised or gave a non-finite ELBO or λ: the caller then takes
        the k steps one at a time with :meth:`step`, which takes the noise this call drew."""
        if self._loop is None:
            return None
        self._draw(generator, k)
        try:
            values, ok = self._run(self._eps, k, optimizer, check=True)
        except (RuntimeError, ValueError):
            ok = False
        if ok:
            return values
        self._pending, self._taken = k, 0
        return None

    def _draw(self, generator, k: int) -> None:
        """The noise of k steps into the first k rows of the (rows, S, noise_dim) buffer,
        each row as the eager step draws its ε (the same stream): in one call where
        :func:`_noise_buffer` found that equal, else one call a row. Rows past k are left
        as they are (the loop reads rows < k, and its shapes stay fixed)."""
        if self._block and (generator is None or generator.device == self._flat.device):
            self._eps[:k].normal_(generator=generator)
        elif generator is not None and generator.device == self._flat.device:
            for row in self._rows[:k]:
                row.normal_(generator=generator)  # = torch.randn(shape, generator=...)
        else:
            for row in self._rows[:k]:
                row.copy_(randn(self.shape, generator, self._flat))

    def _run(self, eps, k: int, optimizer, check: bool):
        """k steps of the compiled loop: (ELBO values (k,), ok). The loop computes out of
        place; λ and Adam's state are written back unless ``check`` and a value or λ came
        out non-finite (ok False: left as before the call)."""
        flat = self._flat
        m, v, t, *settings = self._adam_state(optimizer)
        if k not in self._n:
            self._n[k] = torch.tensor(k, dtype=torch.int64, device=flat.device)
        out = self._loop(flat, eps, self._n[k], self._data, m, v, t, *settings)
        values = out[4][:k]
        ok = not check or bool(out[5])
        if ok:
            for x, new in zip((flat, m, v, t), out[:4], strict=True):
                x.copy_(new)
        return values.neg(), ok


def _noise_buffer(rows: int, shape: tuple, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A (rows, S, noise_dim) noise buffer in ``like``'s dtype and device, and whether one
    ``normal_`` call on its first k rows draws exactly what k calls of ``torch.randn(shape)``
    draw from the same generator state (checked here on a seeded generator).

    torch's CPU sampler fills a contiguous tensor of 16 or more values in blocks (a
    stream of its own) and any other tensor value by value; a buffer whose rows are
    padded by one value is not contiguous, so for rows of fewer than 16 values one call
    gives the per-row stream (about 2 µs a row less). Elsewhere (a GPU, larger rows) the
    check fails and the rows are drawn one call each."""
    buffer = _padded_zeros(rows, shape, like)
    probe = buffer[: 17 // buffer[0].numel() + 2]  # ≥ 17 values and ≥ 2 rows
    gen = torch.Generator(device=like.device)
    gen.manual_seed(0)
    probe.normal_(generator=gen)
    gen.manual_seed(0)
    one_by_one = torch.stack([randn(shape, gen, like) for _ in range(probe.shape[0])])
    return buffer, bool(torch.equal(probe, one_by_one))


def _padded_zeros(rows: int, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """Zeros of shape (rows, *shape) whose rows are padded by one value (not contiguous):
    the layout of every noise buffer the loop sees, so that it compiles once."""
    size = int(torch.Size(shape).numel())
    return like.new_zeros((rows, size + 1))[:, :size].unflatten(1, shape)
