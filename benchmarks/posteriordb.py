"""Variational inference on eight posteriordb posteriors: varbayes vs NumPyro vs Pyro.

Each posterior (``../shared/posteriordb``, see ``examples/posteriordb/``) is fitted by

* NumPyro ``AutoNormal`` and ``AutoMultivariateNormal`` with their defaults (init_to_uniform,
  init_scale 0.1, ``Trace_ELBO`` with one particle), Adam step size 0.01 (NumPyro's ``Adam``
  has no default step size; 0.01 is what the issue's runs and most NumPyro examples use),
  ``--steps`` steps (10,000) as ``svi.run(..., progress_bar=False)`` runs them: one jitted
  ``lax.scan`` over ``svi.update``. The clock is read around ``svi.init``, the compilation
  of the scan (ahead of time) and its execution, so a fit's wall time is reported with and
  without compilation;
* Pyro ``AutoNormal`` with the same settings on ``--pyro-posteriors``, a plain ``svi.step``
  loop, on the two posteriors with proper priors only (eight schools, the GP): Pyro's
  AutoNormal builds its prototype trace by sampling the model, and ``ImproperUniform``
  (a flat prior) cannot be sampled;
* varbayes ``vi.fit(model)`` with its defaults (its own stopping rule, so its step count
  is its own), mean-field, full-rank and ``"auto"`` (the default: full rank, continued as
  the nested Laplace family, and then a normalizing flow, when the full-rank k̂ > 0.7),
  on the translations in
  ``examples/posteriordb/``. ``--numpyro-guides`` adds NumPyro's own flow guides
  (``AutoIAFNormal``, ``AutoBNAFNormal``) with their defaults beside it;
* with ``--svi-unroll K[,K...]``, NumPyro AutoNormal's own recipe on the varbayes Model as
  one ``torch.compile``d function of K steps (``run_compiled_svi``): the fastest generic
  SVI step this project found with public torch APIs, to set its steps/s beside NumPyro's.

Every tool runs in its default float dtype (float32). Reported per fit: steps, steps/s, wall
time of the fit (compile included) and without compile, the final ELBO (a 2,000-particle
estimate at the fitted q, by each tool's own estimator; all the models keep every constant
of their log densities, so the ELBOs are comparable), and the accuracy against the
reference NUTS draws in the constrained space, over the reference's parameters (``--draws``
draws from q): ``mean err`` = max over parameters of |mean − ref mean| / ref sd, ``sd ratio``
= the range of sd / ref sd.

Dependent bound (garch: beta1 in (0, 1 − alpha1)): NumPyro's and Pyro's AutoNormal map each
site to its support as the prototype trace found it, with alpha1 fixed at its initial value,
so there ``beta1 = (1 − alpha1) u`` with a flat u in (0, 1) and the factor log(1 − alpha1),
which keeps the density of beta1 flat, as Stan's program has it.

Run: python benchmarks/posteriordb.py [--posteriors kidiq,garch] [--steps 10000]
     [--libs numpyro,pyro,varbayes] [--pyro-posteriors eight_schools,gp_pois_regr]
     [--numpyro-guides AutoNormal,AutoMultivariateNormal,AutoIAFNormal] [--svi-unroll 1,10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
import _data  # noqa: E402

REFERENCE = json.loads((REPO / "tests" / "data" / "posteriordb_reference.json").read_text())


@dataclasses.dataclass
class Result:
    """One fit: its speed, its ELBO and its accuracy against the reference."""

    posterior: str
    tool: str
    steps: int
    steps_per_s: float
    wall_s: float  # the whole fit: setup, compilation, steps
    run_s: float  # the steps alone
    elbo: float
    mean_err: float  # max over parameters of |mean - ref mean| / ref sd
    sd_lo: float  # min over parameters of sd / ref sd
    sd_hi: float
    khat: float = float("nan")  # PSIS k̂ of q
    note: str = ""


def reference_sites(name):
    """The site names of the reference's parameters (``theta`` of ``theta[1]``)."""
    return sorted({k.split("[")[0] for k in REFERENCE[name]["summary"]})


def accuracy(name, draws):
    """(max |mean − ref mean| / ref sd, min sd/ref sd, max sd/ref sd) over the reference's
    parameters; ``draws`` maps a site name to (n, *shape) constrained draws."""
    acc = _data.compare(REFERENCE[name]["summary"], draws)
    errs, ratios = zip(*acc.values(), strict=True)
    return max(errs), min(ratios), max(ratios)


# --------------------------------------------------------------------------- NumPyro


def numpyro_model(name, td, dtype="float32"):
    """The Stan program ``name`` as a NumPyro model of no arguments (data closed over, as
    ``dtype``)."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax.scipy.special import logsumexp
    from numpyro.distributions import constraints

    a = {k: jnp.asarray(v, dtype=dtype) for k, v in td.items()}

    def flat(site, support=constraints.real, shape=()):
        return numpyro.sample(site, dist.ImproperUniform(support, (), shape))

    def eight_schools():
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([8]).to_event(1))
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        theta = numpyro.deterministic("theta", theta_trans * tau + mu)
        numpyro.sample("y", dist.Normal(theta, a["sigma"]).to_event(1), obs=a["y"])

    def kidiq():
        beta = flat("beta", shape=(2,))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
        loc = beta[0] + beta[1] * a["mom_iq"]
        numpyro.sample("y", dist.Normal(loc, sigma).to_event(1), obs=a["kid_score"])

    def diamonds():
        b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([a["Xc"].shape[1]]).to_event(1))
        intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
        sigma = numpyro.sample(
            "sigma", dist.TruncatedDistribution(dist.StudentT(3.0, 0.0, 10.0), low=0.0)
        )
        loc = intercept + a["Xc"] @ b
        numpyro.sample("Y", dist.Normal(loc, sigma).to_event(1), obs=a["Y"])

    def garch():
        mu = flat("mu")
        alpha0 = flat("alpha0", constraints.positive)
        alpha1 = flat("alpha1", constraints.unit_interval)
        u = flat("beta1_unit", constraints.unit_interval)
        beta1 = numpyro.deterministic("beta1", (1 - alpha1) * u)
        numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))
        y = a["y"]

        def step(s2_prev, y_prev):
            s2 = alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * s2_prev
            return s2, s2

        s2_1 = (a["sigma1"] ** 2).astype(jnp.result_type(alpha0, alpha1, beta1, y))
        _, s2 = jax.lax.scan(step, s2_1, y[:-1])
        sigma = jnp.sqrt(jnp.concatenate([s2_1[None], s2]))
        numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y)

    def regression(y_key):
        def model():
            beta = flat("beta", shape=(a["X"].shape[1],))
            sigma = flat("sigma", constraints.positive)
            numpyro.sample("y", dist.Normal(a["X"] @ beta, sigma).to_event(1), obs=a[y_key])

        return model

    def low_dim_gauss_mix():
        mu = flat("mu", constraints.ordered_vector, (2,))
        numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
        numpyro.factor("sigma_half", -2 * jnp.log(2.0))  # Stan's normal(0, 2), not half-normal
        theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
        y = a["y"]
        lp = jnp.stack(
            [
                jnp.log(theta) + dist.Normal(mu[0], sigma[0]).log_prob(y),
                jnp.log1p(-theta) + dist.Normal(mu[1], sigma[1]).log_prob(y),
            ]
        )
        numpyro.factor("y", logsumexp(lp, axis=0).sum())

    def gp_pois_regr():
        rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
        alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
        numpyro.factor("alpha_half", -jnp.log(2.0))  # Stan's normal(0, 2) on alpha > 0
        n = a["x"].shape[0]
        f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([n]).to_event(1))
        d2 = (a["x"][:, None] - a["x"][None, :]) ** 2
        cov = alpha**2 * jnp.exp(-d2 / (2 * rho**2)) + 1e-10 * jnp.eye(n)
        f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
        numpyro.sample("k", dist.Poisson(jnp.exp(f)).to_event(1), obs=a["k"])

    models = {
        "eight_schools": eight_schools,
        "kidiq": kidiq,
        "diamonds": diamonds,
        "garch": garch,
        "mesquite": regression("log_weight"),
        "low_dim_gauss_mix": low_dim_gauss_mix,
        "gp_pois_regr": gp_pois_regr,
        "nes": regression("partyid7"),
    }
    return models[name]


def run_numpyro(name, td, guide_kind, steps, lr, n_draws, seed, repeats=1):
    """Fit posterior ``name`` with a NumPyro autoguide as ``svi.run`` does; see the module
    docstring for what is timed. steps/s: the median over the fit and ``repeats`` − 1
    further runs of its compiled scan."""
    import jax
    import numpyro
    from numpyro.infer import SVI, Predictive, Trace_ELBO, autoguide
    from numpyro.infer.importance import psis_diagnostic

    model = numpyro_model(name, td)
    guide = getattr(autoguide, guide_kind)(model)
    svi = SVI(model, guide, numpyro.optim.Adam(step_size=lr), Trace_ELBO())
    t0 = time.perf_counter()
    state = svi.init(jax.random.PRNGKey(seed))

    def run(s):
        return jax.lax.scan(lambda s, _: svi.update(s), s, None, length=steps)

    compiled = jax.jit(run).lower(state).compile()
    t1 = time.perf_counter()
    state, losses = compiled(state)
    jax.block_until_ready(losses)
    t2 = time.perf_counter()
    rates = [steps / (t2 - t1)]
    for _ in range(repeats - 1):  # the same steps again, from the fitted state
        t = time.perf_counter()
        jax.block_until_ready(compiled(state))
        rates.append(steps / (time.perf_counter() - t))
    rate = float(np.median(rates))
    params = svi.get_params(state)
    if not all(np.isfinite(np.asarray(v)).all() for v in jax.tree_util.tree_leaves(params)):
        # NumPyro returns NaN parameters after a divergence, with no error: record it
        nan = float("nan")
        return Result(
            name, f"NumPyro {guide_kind}", steps, rate, t2 - t0, t2 - t1, nan,
            nan, nan, nan, nan, "DIVERGED: NaN parameters after the steps",
        )  # fmt: skip
    key = jax.random.PRNGKey(seed + 1)
    elbo = -float(Trace_ELBO(num_particles=2000).loss(key, params, model, guide))
    sites = reference_sites(name)
    draws = Predictive(model, guide=guide, params=params, num_samples=n_draws, return_sites=sites)(
        key
    )
    err, lo, hi = accuracy(name, {k: np.asarray(v) for k, v in draws.items()})
    khat = float(psis_diagnostic(key, params, model, guide, num_particles=2000))
    return Result(
        name, f"NumPyro {guide_kind}", steps, rate, t2 - t0, t2 - t1, elbo, err,
        lo, hi, khat,
    )  # fmt: skip


# --------------------------------------------------------------------------- Pyro


def pyro_model(name, td):
    """A subset of the Stan programs as Pyro models of no arguments (data closed over),
    written to broadcast over a leading particle dimension (vectorised ELBO estimate)."""
    import pyro
    import pyro.distributions as pdist
    import torch

    a = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in td.items()}

    def eight_schools():
        theta_trans = pyro.sample("theta_trans", pdist.Normal(0.0, 1.0).expand([8]).to_event(1))
        mu = pyro.sample("mu", pdist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", pdist.HalfCauchy(5.0))
        theta = pyro.deterministic("theta", theta_trans * tau[..., None] + mu[..., None])
        pyro.sample("y", pdist.Normal(theta, a["sigma"]).to_event(1), obs=a["y"])

    def gp_pois_regr():
        rho = pyro.sample("rho", pdist.Gamma(25.0, 4.0))
        alpha = pyro.sample("alpha", pdist.HalfNormal(2.0))
        pyro.factor("alpha_half", -torch.log(torch.tensor(2.0)))  # Stan's normal(0, 2), alpha > 0
        n = a["x"].shape[0]
        f_tilde = pyro.sample("f_tilde", pdist.Normal(0.0, 1.0).expand([n]).to_event(1))
        d2 = (a["x"][:, None] - a["x"][None, :]) ** 2
        r2, al2 = (rho**2)[..., None, None], (alpha**2)[..., None, None]
        cov = al2 * torch.exp(-d2 / (2 * r2)) + 1e-10 * torch.eye(n)
        f = pyro.deterministic("f", (torch.linalg.cholesky(cov) @ f_tilde[..., None])[..., 0])
        pyro.sample("k", pdist.Poisson(torch.exp(f)).to_event(1), obs=a["k"])

    models = {"eight_schools": eight_schools, "gp_pois_regr": gp_pois_regr}
    if name not in models:
        raise ValueError(f"--pyro-posteriors: no Pyro model of {name!r}; have {sorted(models)}")
    return models[name]


def run_pyro(name, td, steps, lr, n_draws, seed):
    """Fit posterior ``name`` with Pyro's AutoNormal: a plain ``svi.step`` loop."""
    import pyro
    import torch
    from pyro.infer import SVI, Predictive, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = pyro_model(name, td)
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    t0 = time.perf_counter()
    for _ in range(steps):
        svi.step()
    t1 = time.perf_counter()
    with torch.no_grad():
        elbo = -Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(model, guide)
        sites = reference_sites(name)
        draws = Predictive(model, guide=guide, num_samples=n_draws, return_sites=sites)()
    err, lo, hi = accuracy(name, {k: v.numpy() for k, v in draws.items() if k != "y"})
    return Result(
        name, "Pyro AutoNormal", steps, steps / (t1 - t0), t1 - t0, t1 - t0, elbo, err, lo, hi
    )


# --------------------------------------------------------------------------- varbayes


def run_varbayes(name, data, guide, n_draws, seed):
    """``vi.fit(model, guide)`` with its defaults (float64 model, MAP + Laplace + deterministic
    ADVI by L-BFGS: ``steps`` counts L-BFGS iterations). Timed: model construction and fit."""
    import posteriordb_models

    from varbayes import vi

    t0 = time.perf_counter()
    model = posteriordb_models.model(name, data)
    post = vi.fit(model, guide, seed=seed)
    t1 = time.perf_counter()
    err, lo, hi = accuracy(name, post.sample(n_draws))
    note = "converged" if post.converged else "NOT converged: " + post.message
    tool = f"varbayes {guide}" + (f" ({post.guide})" if guide == "auto" else "")
    return Result(
        name, tool, post.steps, post.steps / (t1 - t0), t1 - t0, t1 - t0,
        post.elbo, err, lo, hi, post.khat, note,
    )  # fmt: skip


def run_compiled_svi(name, data, steps, lr, unroll, n_draws, seed):
    """Issue 9's "compile the whole step" candidate, written as a user would with public
    APIs: NumPyro AutoNormal's recipe (mean-field Normal q, locations from init_to_uniform,
    scales 0.1, one particle, Adam(lr), float32, ``steps`` steps) on the varbayes Model, as
    one ``torch.compile(fullgraph=True)`` function that runs ``unroll`` steps per call
    (``torch.func.grad`` of the one-particle negative ELBO, Adam written out), the later
    calls with guard evaluation skipped. Timed: model construction, the first call
    (compilation) and the steps."""
    import posteriordb_models
    import torch

    from varbayes.vi.model import no_validation

    t0 = time.perf_counter()
    model = posteriordb_models.model(name, data, dtype=torch.float32)
    d = model.dim
    gen = torch.Generator().manual_seed(seed)

    def loss(loc, log_scale, eps):
        return -(model.log_density(loc + log_scale.exp() * eps).mean() + log_scale.sum())

    grad = torch.func.grad(loss, argnums=(0, 1))

    def adam(p, g, m, v, t):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        return p - lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8), m, v

    def run(state, eps):  # eps: (unroll, 1, D)
        loc, ls, m_loc, v_loc, m_ls, v_ls, t = state
        for k in range(unroll):
            g_loc, g_ls = grad(loc, ls, eps[k])
            t = t + 1
            loc, m_loc, v_loc = adam(loc, g_loc, m_loc, v_loc, t)
            ls, m_ls, v_ls = adam(ls, g_ls, m_ls, v_ls, t)
        return loc, ls, m_loc, v_loc, m_ls, v_ls, t

    loc0 = torch.rand(d, generator=gen) * 4 - 2  # init_to_uniform: U(-2, 2), unconstrained
    moments = [torch.zeros(d) for _ in range(4)]
    state = (loc0, torch.full((d,), float(np.log(0.1))), *moments, torch.tensor(0.0))
    calls = steps // unroll
    with no_validation():
        step = torch.compile(run, fullgraph=True, dynamic=False)
        state = step(state, torch.randn(unroll, 1, d, generator=gen))
        # Every call has the same shapes and dtypes, so dynamo's guards (checked before
        # each call, about half of a one-step call's time) are skipped once compiled.
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            t1 = time.perf_counter()
            for _ in range(calls - 1):
                state = step(state, torch.randn(unroll, 1, d, generator=gen))
            t2 = time.perf_counter()
    tool = f"varbayes compiled SVI step ({unroll} unrolled)"
    n = (calls - 1) * unroll
    return _meanfield_result(
        name, data, tool, state[0], state[1].exp(), steps, n / (t2 - t1), t2 - t0, t2 - t1,
        f"compile {t1 - t0:.1f} s", gen, n_draws,
    )  # fmt: skip


def run_svi_fit(name, data, steps, lr, n_draws, seed, compile=True, repeats=1):
    """The library's generic SVI path: ``varbayes.vi.svi.fit(model, MeanFieldNormal(...),
    compile=compile)`` (compiled: the whole ELBO and its gradient as one graph; eager: the
    autograd path; both with the public fused Adam and the loop's monitor and checks) with
    AutoNormal's recipe as above, all ``steps`` steps (tol = rtol = 0). Timed: model
    construction, a first call of 10 steps (which compiles), then the rest resumed from its
    state (the compiled gradient is reused); steps/s is the resumed call's (the median
    over it and ``repeats`` − 1 further resumed calls of as many steps; the accuracy is that
    of the parameters after the first ``steps``, copied before the repeats)."""
    import posteriordb_models
    import torch

    from varbayes.monitor import NonFiniteObjectiveError
    from varbayes.vi import MeanFieldNormal
    from varbayes.vi.svi import fit

    t0 = time.perf_counter()
    model = posteriordb_models.model(name, data, dtype=torch.float32)
    guide = MeanFieldNormal(model.dim, init_scale=0.1, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        guide.loc.copy_(torch.rand(model.dim, generator=gen) * 4 - 2)  # init_to_uniform
    kw = dict(lr=lr, seed=seed, tol=0.0, rtol=0.0, compile=compile, fast=False)
    tool = f"varbayes svi.fit(compile={compile})"
    try:
        first = fit(model, guide, num_steps=10, **kw)
        t1 = time.perf_counter()
        r = fit(model, guide, num_steps=steps - 10, state=first.state, **kw)
    except NonFiniteObjectiveError as exc:  # stopped and reported, parameters restored
        t = time.perf_counter() - t0
        nan = float("nan")
        why = f"DIVERGED at step {exc.step}: stopped, not returned"
        return Result(name, tool, steps, nan, t, t, nan, nan, nan, nan, nan, why)
    t2 = time.perf_counter()
    note = f"compile {t1 - t0:.1f} s; {r.message}"
    loc, scale = guide.loc.detach().clone(), guide.scale.detach().clone()
    rates = [(steps - 10) / (t2 - t1)]
    for _ in range(repeats - 1):  # the same steps again, resumed
        t = time.perf_counter()
        r = fit(model, guide, num_steps=steps - 10, state=r.state, **kw)
        rates.append((steps - 10) / (time.perf_counter() - t))
    return _meanfield_result(
        name, data, tool, loc, scale, steps, float(np.median(rates)), t2 - t0, t2 - t1, note,
        gen, n_draws,
    )  # fmt: skip


def _meanfield_result(name, data, tool, loc, scale, steps, rate, wall, run_s, note, gen, n_draws):
    """The Result of a fitted mean-field q = N(loc, diag scale²) on the unconstrained space:
    its ELBO (2,000 float64 draws) and accuracy (``n_draws`` draws), or DIVERGED."""
    import posteriordb_models
    import torch

    from varbayes.vi.posterior import log_density_chunked

    loc, scale = loc.double(), scale.double()
    d = loc.shape[0]
    if not (torch.isfinite(loc).all() and torch.isfinite(scale).all()):
        nan = float("nan")
        return Result(
            name, tool, steps, rate, wall, run_s, nan, nan, nan, nan, nan,
            "DIVERGED: NaN parameters after the steps",
        )  # fmt: skip
    m64 = posteriordb_models.model(name, data)
    eps = torch.randn(2000, d, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        lp = log_density_chunked(m64, loc + scale * eps)  # NaN: p = 0, as vi.fit's check
        entropy = scale.log().sum() + 0.5 * d * (1 + np.log(2 * np.pi))
        elbo = float(lp.mean() + entropy)
        z = loc + scale * torch.randn(n_draws, d, generator=gen, dtype=torch.float64)
        err, lo, hi = accuracy(name, m64.constrain(z))
    return Result(name, tool, steps, rate, wall, run_s, elbo, err, lo, hi, note=note)


# --------------------------------------------------------------------------- table


def row(r: Result) -> str:
    return (
        f"| {r.posterior} | {r.tool} | {r.steps} | {r.steps_per_s:,.0f} | {r.wall_s:.2f} | "
        f"{r.run_s:.2f} | {r.elbo:.1f} | {r.mean_err:.3g} | {r.sd_lo:.2f}–{r.sd_hi:.2f} | "
        f"{r.khat:.2f} | {r.note} |"
    )


HEADER = (
    "| posterior | tool | steps | steps/s | fit s (with compile) | fit s (steps only) | ELBO "
    "| mean err (ref sd) | sd / ref sd | k̂ | note |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def allocator() -> str:
    """The malloc this process runs on: a preloaded tcmalloc or jemalloc (their shared
    library mapped in), else the C library's."""
    try:
        maps = pathlib.Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    from varbayes.cpu_cache import library

    cache = (
        "; varbayes' compiled loop on its caching CPU allocator (varbayes.cpu_cache)"
        if library() is not None
        else "; varbayes.cpu_cache unavailable"
    )
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in maps:
            return f"{name} (preloaded){cache}"
    return f"the C library's malloc{cache}"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posteriors", default=",".join(_data.POSTERIORS), help="comma-separated")
    p.add_argument("--libs", default="numpyro,pyro,varbayes", help="comma-separated tools")
    p.add_argument("--steps", type=int, default=10_000, help="NumPyro/Pyro steps (10000)")
    p.add_argument("--pyro-steps", type=int, default=None, help="Pyro's steps (default: --steps)")
    p.add_argument("--lr", type=float, default=0.01, help="NumPyro/Pyro Adam step size (0.01)")
    p.add_argument("--draws", type=int, default=10_000, help="draws from q for accuracy")
    p.add_argument(
        "--pyro-posteriors",
        default="eight_schools,gp_pois_regr",
        help="Pyro's subset (comma-separated)",
    )
    p.add_argument(
        "--numpyro-guides",
        default="AutoNormal,AutoMultivariateNormal",
        help="NumPyro autoguides (comma-separated), e.g. add AutoIAFNormal",
    )
    p.add_argument(
        "--svi-unroll",
        default="",
        help="also run varbayes' compiled SVI step with these unrolls (comma-separated, e.g. "
        "1,10; with --libs varbayes-svi alone, only it)",
    )
    p.add_argument(
        "--svi-fit",
        default="",
        help="also run the library's generic SVI path, svi.fit, with AutoNormal's recipe: "
        "'compiled', 'eager' or both (comma-separated)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="steps/s of NumPyro and of svi.fit: the median of this many timed runs of "
        "--steps steps (the fit and repeats - 1 more from its state; default 3)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    names = [n for n in args.posteriors.split(",") if n]
    libs = set(args.libs.split(","))
    pyro_names = set(args.pyro_posteriors.split(","))
    results = []
    print(f"memory allocator: {allocator()}; torch threads: {_torch_threads()}", flush=True)
    print(HEADER, flush=True)
    for name in names:
        data = _data.load_data(name)
        td = _data.transformed_data(name, data)
        runs = []
        if "varbayes" in libs:
            runs += [("varbayes", guide) for guide in ("meanfield", "fullrank", "auto")]
        runs += [("varbayes-svi", int(k)) for k in args.svi_unroll.split(",") if k]
        runs += [("varbayes-svi-fit", k == "compiled") for k in args.svi_fit.split(",") if k]
        if "numpyro" in libs:
            runs += [("numpyro", kind) for kind in args.numpyro_guides.split(",") if kind]
        if "pyro" in libs and name in pyro_names:
            runs.append(("pyro", "AutoNormal"))
        for lib, kind in runs:
            if lib == "varbayes":
                r = run_varbayes(name, data, kind, args.draws, args.seed)
            elif lib == "varbayes-svi-fit":
                r = run_svi_fit(
                    name, data, args.steps, args.lr, args.draws, args.seed, kind, args.repeats
                )
            elif lib == "varbayes-svi":
                r = run_compiled_svi(name, data, args.steps, args.lr, kind, args.draws, args.seed)
            elif lib == "numpyro":
                r = run_numpyro(
                    name, td, kind, args.steps, args.lr, args.draws, args.seed, args.repeats
                )
            else:
                r = run_pyro(
                    name, td, args.pyro_steps or args.steps, args.lr, args.draws, args.seed
                )
            results.append(r)
            print(row(r), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps([dataclasses.asdict(r) for r in results], indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
