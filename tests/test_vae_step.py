"""``Trainer(compile="step")``: the loss, its gradient and Adam's update as one compiled
graph (:mod:`varbayes.vae.step`), against the eager step (backward + torch's fused Adam).

The oracle is the eager trainer on the same data and seeds: the compiled run must take
the same steps to float32 rounding, on every kind of model and both batch shapes (a full
batch and the last, smaller one), keep the optimizer's state as torch's Adam keeps it,
resume bit for bit, and refuse what it cannot do before it changes anything.
"""

from __future__ import annotations

import pytest
import torch
from test_vae_train import CFG, DATA, weights

from varbayes.vae.checkpoint import load_checkpoint
from varbayes.vae.model import VAE
from varbayes.vae.train import Trainer, TrainingDivergedError, train

# 160 images in batches of 24: six full batches and a last one of 16 (two compiled shapes)
STEP_CFG = CFG.replace(batch_size=24, epochs=2)

KINDS = {
    "elbo": dict(),
    "iwae": dict(objective="iwae", num_samples=3),
    "mc-kl": dict(kl="mc"),
    "vampprior": dict(prior="vampprior", num_pseudo_inputs=10, kl="mc"),
    "two-layers-iwae": dict(
        stochastic_layers=2, top_hidden=(8,), top_latent_dim=2, objective="iwae",
        num_samples=3, kl="mc",
    ),
}  # fmt: skip


def assert_close_weights(a: dict, b: dict, rtol=1e-5, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


def _takes_the_eager_steps(tmp_path, cfg):
    eager = train(cfg, tmp_path / "eager", data=DATA, progress=False)
    comp = train(cfg, tmp_path / "step", data=DATA, progress=False, compile="step")
    assert_close_weights(weights(eager.model), weights(comp.model))
    for a, b in zip(eager.history, comp.history, strict=True):
        assert b["train_bound"] == pytest.approx(a["train_bound"], rel=1e-5)
        assert b["val_elbo"] == pytest.approx(a["val_elbo"], rel=1e-5)
    # the optimizer's state is torch's Adam's: the same step counts, moments to rounding
    se = load_checkpoint(tmp_path / "eager").state["optimizer"]["state"]
    sc = load_checkpoint(tmp_path / "step").state["optimizer"]["state"]
    assert se.keys() == sc.keys()
    for i in se:
        assert torch.equal(se[i]["step"], sc[i]["step"])
        assert se[i]["step"].dtype == sc[i]["step"].dtype
        for key in ("exp_avg", "exp_avg_sq"):  # to rounding, on the scale of the tensor
            scale = float(se[i][key].abs().max())
            torch.testing.assert_close(sc[i][key], se[i][key], rtol=1e-4, atol=1e-5 * scale)
    return eager, comp


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_the_compiled_step_takes_the_eager_steps(tmp_path, precision):
    """Two epochs (14 steps, both batch shapes) give the eager weights, metrics and Adam
    state to float32 rounding; under bf16-mixed the graph holds the autocast (it is not
    an fp32 graph reused: the run differs from fp32 as the eager one does)."""
    eager, comp = _takes_the_eager_steps(tmp_path, STEP_CFG.replace(precision=precision))
    assert eager.history[-1]["train_bound"] == pytest.approx(-25.4, abs=0.5)  # it trained
    if precision == "bf16-mixed":
        fp32 = train(STEP_CFG, tmp_path / "fp32", data=DATA, progress=False, compile="step")
        gap = weights(fp32.model)["decoder.net.0.weight"] - comp.model.decoder.net[0].weight
        assert gap.abs().max() > 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "elbo"])
def test_every_model_kind_compiles_and_takes_the_eager_steps(tmp_path, kind):
    """IWAE, the Monte Carlo KL, the VampPrior and a two-layer IWAE model compile as one
    graph and take the eager steps."""
    cfg = STEP_CFG.replace(epochs=1, **KINDS[kind])
    _, comp = _takes_the_eager_steps(tmp_path, cfg)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        initial = weights(VAE(cfg))  # the trainer's starting weights
    moved = [k for k, v in weights(comp.model).items() if not torch.equal(v, initial[k])]
    assert moved == list(initial)  # every weight was trained


def test_a_compiled_run_resumes_bit_for_bit_and_from_an_eager_checkpoint(tmp_path):
    """Stopped mid-epoch and resumed compiled, the run ends with the uninterrupted compiled
    run's weights bit for bit; an eager run's checkpoint resumed compiled ends as the
    eager run does, to rounding."""
    full = train(STEP_CFG, tmp_path / "full", data=DATA, progress=False, compile="step")

    def stop(trainer, epoch, batch):
        if epoch == 0 and batch == 3:
            trainer.request_stop()

    for name, first in (("step", "step"), ("eager", False)):
        r = train(STEP_CFG, tmp_path / name, data=DATA, progress=False, compile=first,
                  callback=stop)  # fmt: skip
        assert r.interrupted and r.checkpoint.name == "epoch-0000-batch-000004"
        steps = load_checkpoint(tmp_path / name).state["optimizer"]["state"][0]["step"]
        assert float(steps) == 4.0  # written into Adam's state before the checkpoint
        resumed = train(STEP_CFG, tmp_path / name, data=DATA, progress=False,
                        compile="step", resume=True)  # fmt: skip
        if name == "step":
            for k, v in weights(full.model).items():
                assert torch.equal(v, weights(resumed.model)[k]), k
            assert [h["train_bound"] for h in resumed.history] == [
                h["train_bound"] for h in full.history
            ]
        else:
            assert_close_weights(weights(full.model), weights(resumed.model))


def test_a_non_finite_loss_stops_the_compiled_run_naming_the_batch(tmp_path):
    """A NaN weight in epoch 2 stops the compiled run as it stops the eager one."""

    def poison(trainer, epoch, batch):
        if epoch == 1 and batch == 0:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    t = Trainer(STEP_CFG, tmp_path / "run", data=DATA, progress=False, callback=poison,
                compile="step")  # fmt: skip
    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 2"):
        t.fit()
    assert load_checkpoint(tmp_path / "run").path.name == "epoch-0001"


def test_compile_step_refuses_several_processes_before_any_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="compile='step' runs in one process"):
        Trainer(STEP_CFG, tmp_path / "run", data=DATA, progress=False, compile="step")
    assert not (tmp_path / "run").exists()


def test_a_model_that_does_not_compile_is_refused_with_the_reason(tmp_path, monkeypatch):
    """A forward with a host read (a graph break) cannot be one graph: a ValueError that
    names compile='step' and the alternatives, with the weights left as they were and no
    checkpoint written."""
    forward = VAE.forward

    def with_host_read(self, x, **kwargs):
        if float(x.sum()) < 0:  # data-dependent Python control flow
            x = -x
        return forward(self, x, **kwargs)

    monkeypatch.setattr(VAE, "forward", with_host_read)
    t = Trainer(STEP_CFG, tmp_path / "run", data=DATA, progress=False, compile="step")
    with pytest.raises(ValueError, match="does not compile as one graph.*compile=True"):
        t.fit()
    assert not (tmp_path / "run" / "latest.json").exists()
    with torch.random.fork_rng():
        torch.manual_seed(STEP_CFG.seed)
        initial = weights(VAE(STEP_CFG))  # the weights the trainer started from
    for k, v in initial.items():
        assert torch.equal(v, weights(t.model)[k]), k
