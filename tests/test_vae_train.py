"""The VAE trainer: learning, exact resume, Ctrl-C, non-finite loss, safe checkpoints."""

from __future__ import annotations

import importlib
import json
import os
import signal
import time

import pytest
import torch

from varbayes.vae import VAE, VAEConfig
from varbayes.vae.checkpoint import load_checkpoint, load_model, resolve_checkpoint
from varbayes.vae.data import VAEData
from varbayes.vae.precision import bf16_products, bf16_products_supported, step_precision
from varbayes.vae.train import Trainer, TrainingDivergedError, train

CFG = VAEConfig(image_shape=(6, 6), hidden=(24,), latent_dim=2, epochs=2, batch_size=16, val_size=0)


def synthetic(n=160, seed=0):
    """Grey-level images: noisy copies of 3 prototypes (structure a VAE can learn)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(3, 36, generator=g)
    idx = torch.randint(0, 3, (n + 48,), generator=g)
    x = (protos[idx] + 0.1 * torch.randn(n + 48, 36, generator=g)).clamp(0, 1)
    return VAEData(x[:n].reshape(-1, 6, 6), x[n:])


DATA = synthetic()

NO_BF16_WARNING = pytest.mark.filterwarnings(
    "ignore:precision='bf16-matmul'.*no bfloat16 products:RuntimeWarning"
)
"""On a CPU without bfloat16 products the trainer warns that bf16-matmul stays float32
(tested by itself below); the other tests train on such a CPU too."""


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_raises_the_validation_elbo(tmp_path):
    """Six epochs (Gaussian decoder) on prototype images raise the validation ELBO by 20+ nats."""
    cfg = CFG.replace(epochs=6, lr=3e-3, likelihood="gaussian")
    torch.manual_seed(cfg.seed)
    initial = VAE(cfg)  # the trainer starts from these weights
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = initial.elbo(DATA.val, num_samples=20, generator=g).elbo.mean().item()
    r = train(cfg, tmp_path / "run", data=DATA, progress=False)
    assert r.history[-1]["val_elbo"] > before + 20
    assert r.history[-1]["val_elbo"] > r.history[0]["val_elbo"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3, 4, 5, 6]


@NO_BF16_WARNING
@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "bf16-matmul"])
def test_resumed_run_ends_with_the_same_weights(tmp_path, precision):
    """1 epoch + resume for a 2nd gives bit-identical weights to 2 epochs in one go (CPU)."""
    cfg = CFG.replace(precision=precision)
    full = train(cfg, tmp_path / "a", data=DATA, progress=False)
    train(cfg.replace(epochs=1), tmp_path / "b", data=DATA, progress=False)
    resumed = train(cfg, tmp_path / "b", data=DATA, progress=False, resume=True)
    assert_same_weights(weights(full.model), weights(resumed.model))
    assert [h["train_bound"] for h in full.history] == [h["train_bound"] for h in resumed.history]


def test_training_leaves_the_global_rng_alone_and_is_seeded_by_config(tmp_path):
    """train() neither reads nor moves torch's global RNG: the same seed gives the same
    weights whatever the global state, and the global stream continues as if untouched."""
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = train(CFG.replace(epochs=1), tmp_path / "a", data=DATA, progress=False)
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(999)
    b = train(CFG.replace(epochs=1), tmp_path / "b", data=DATA, progress=False)
    assert_same_weights(weights(a.model), weights(b.model))
    c = train(CFG.replace(epochs=1, seed=1), tmp_path / "c", data=DATA, progress=False)
    assert not torch.equal(weights(a.model)["encoder.net.0.weight"], c.model.encoder.net[0].weight)


def test_ctrl_c_mid_epoch_saves_and_resume_is_exact(tmp_path):
    """SIGINT mid-epoch saves a checkpoint and stops; resuming reproduces the full run."""
    cfg = CFG.replace(epochs=2, objective="iwae", num_samples=3)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run in the background
    full = train(cfg, tmp_path / "a", data=DATA, progress=False)

    def interrupt(trainer, epoch, batch):
        if epoch == 1 and batch == 3:
            os.kill(os.getpid(), signal.SIGINT)

    r = train(cfg, tmp_path / "b", data=DATA, progress=False, callback=interrupt)
    assert r.interrupted and r.epochs_done == 1
    assert r.checkpoint.name == "epoch-0001-batch-000004"
    assert resolve_checkpoint(tmp_path / "b") == r.checkpoint
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is restored
    resumed = train(cfg, tmp_path / "b", data=DATA, progress=False, resume=True)
    assert not resumed.interrupted
    assert_same_weights(weights(full.model), weights(resumed.model))


@pytest.mark.parametrize("signals", [["SIGTERM"], ["SIGINT", "SIGINT"], ["SIGINT", "SIGTERM"]])
def test_sigterm_or_a_forwarded_repeat_still_saves(tmp_path, signals):
    """SIGTERM saves like Ctrl-C, and a signal repeated at once (torchrun forwards the
    terminal's Ctrl-C to workers that already received it) does not abort the save."""

    def interrupt(trainer, epoch, batch):
        if epoch == 0 and batch == 2:
            for name in signals:
                os.kill(os.getpid(), getattr(signal, name))

    r = train(CFG, tmp_path / "b", data=DATA, progress=False, callback=interrupt)
    assert r.interrupted and r.epochs_done == 0
    assert r.checkpoint.name == "epoch-0000-batch-000003"
    assert resolve_checkpoint(tmp_path / "b") == r.checkpoint
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_ctrl_c_later_aborts_without_saving(tmp_path, monkeypatch):
    """Ctrl-C, then Ctrl-C again after the repeat window: KeyboardInterrupt, nothing saved."""
    monkeypatch.setattr(importlib.import_module("varbayes.vae.train"), "_REPEAT_S", 0.0)
    before = signal.getsignal(signal.SIGINT)

    def interrupt(trainer, epoch, batch):
        if epoch == 0 and batch == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(CFG, tmp_path / "b", data=DATA, progress=False, callback=interrupt)
    assert not (tmp_path / "b" / "checkpoints").exists()
    assert signal.getsignal(signal.SIGINT) is before


def test_non_finite_loss_stops_naming_epoch_and_batch_and_keeps_last_checkpoint(tmp_path):
    """A NaN weight in epoch 2 stops training with a message naming epoch 2, batch 2."""

    def poison(trainer, epoch, batch):
        if epoch == 1 and batch == 0:
            p = next(trainer.model.parameters())
            with torch.no_grad():
                p.fill_(float("nan"))

    cfg = CFG.replace(epochs=3)
    t = Trainer(cfg, tmp_path / "run", data=DATA, progress=False, callback=poison)
    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 2") as info:
        t.fit()
    assert info.value.epoch == 2 and info.value.batch == 2
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.path.name == "epoch-0001"
    assert all(torch.isfinite(v).all() for v in ckpt.model.state_dict().values())


def test_kl_warmup_raises_beta_linearly(tmp_path):
    """With warmup_epochs=2 the recorded β is 1/2 after epoch 1 and 1 after epochs 2 and 3."""
    cfg = CFG.replace(epochs=3, warmup_epochs=2.0, beta=1.0)
    r = train(cfg, tmp_path / "run", data=DATA, progress=False)
    assert [h["beta"] for h in r.history] == pytest.approx([0.5, 1.0, 1.0])


def test_lr_schedule_sets_the_optimizer_rate_each_epoch(tmp_path):
    """Under the burda schedule, epochs 1 and 2-4 run at lr and lr·10^(−1/7) (Adam's groups)."""
    seen = []
    cfg = CFG.replace(epochs=4, lr_schedule="burda")
    t = Trainer(cfg, tmp_path / "run", data=DATA, progress=False,
                on_epoch_end=lambda tr, m, rec: seen.append(rec["lr"]))  # fmt: skip
    t.fit()
    assert seen == pytest.approx([1e-3] + [1e-3 * 10 ** (-1 / 7)] * 3)


def test_checkpoint_holds_weights_config_and_state(tmp_path):
    """The checkpoint reloads to the trained weights, the same config and the epoch count."""
    r = train(CFG, tmp_path / "run", data=DATA, progress=False)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.config == CFG
    assert ckpt.state["epoch"] == 2
    assert_same_weights(weights(r.model), weights(ckpt.model))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch-0001", "epoch-0002"]


class _Payload:
    """Pickles to a call of os.makedirs: executing it would create a directory."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_pickle_payload_in_state_is_refused_without_running(tmp_path):
    """A state.pt carrying a code-running pickle is refused with ValueError; the code never runs."""
    train(CFG.replace(epochs=1), tmp_path / "run", data=DATA, progress=False)
    marker = tmp_path / "pwned"
    state_file = resolve_checkpoint(tmp_path / "run") / "state.pt"
    torch.save({"epoch": 1, "evil": _Payload(str(marker))}, state_file)
    with pytest.raises(ValueError, match="refusing to load"):
        train(CFG, tmp_path / "run", data=DATA, progress=False, resume=True)
    assert not marker.exists()


def test_pickle_in_place_of_weights_is_refused_without_running(tmp_path):
    """A pickle file in place of model.safetensors raises ValueError; the payload never runs."""
    train(CFG.replace(epochs=1), tmp_path / "run", data=DATA, progress=False)
    marker = tmp_path / "pwned"
    weights_file = resolve_checkpoint(tmp_path / "run") / "model.safetensors"
    torch.save({"w": _Payload(str(marker))}, weights_file)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_model(tmp_path / "run")
    assert not marker.exists()


def test_missing_corrupted_and_incompatible_checkpoints(tmp_path):
    """Missing → FileNotFoundError; bad latest.json, truncated weights, wrong sizes → ValueError."""
    with pytest.raises(FileNotFoundError, match="checkpoint .* not found"):
        load_model(tmp_path / "nothing")
    train(CFG.replace(epochs=1), tmp_path / "run", data=DATA, progress=False)
    ckpt = resolve_checkpoint(tmp_path / "run")
    cfg_file = ckpt / "config.json"
    good = cfg_file.read_text()
    cfg_file.write_text(good.replace('"latent_dim": 2', '"latent_dim": 3'))
    with pytest.raises(ValueError, match="incompatible with its config.json"):
        load_model(tmp_path / "run")
    cfg_file.write_text("{not json")
    with pytest.raises(ValueError, match="config .* is invalid"):
        load_model(tmp_path / "run")
    cfg_file.write_text(good)
    w = ckpt / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupted or not a safetensors"):
        load_model(tmp_path / "run")
    (tmp_path / "run" / "latest.json").write_text("[]")
    with pytest.raises(ValueError, match="latest.json is corrupted"):
        load_model(tmp_path / "run")
    (tmp_path / "run" / "latest.json").write_text('{"checkpoint": "checkpoints/gone"}')
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors"):
        load_model(tmp_path / "run")


def test_state_errors_name_the_file(tmp_path):
    """A missing, truncated or foreign state.pt raises an error naming state.pt."""
    train(CFG.replace(epochs=1), tmp_path / "run", data=DATA, progress=False)
    state = resolve_checkpoint(tmp_path / "run") / "state.pt"
    torch.save([1, 2], state)
    with pytest.raises(ValueError, match="not a varbayes VAE state"):
        load_checkpoint(tmp_path / "run")
    state.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="state.pt"):
        load_checkpoint(tmp_path / "run")
    state.unlink()
    with pytest.raises(FileNotFoundError, match="has no state.pt"):
        load_checkpoint(tmp_path / "run")


def test_resume_and_new_run_guards(tmp_path):
    """Resume without a run, resume with another config, or overwrite a run: clear errors."""
    with pytest.raises(FileNotFoundError, match="resume: no checkpoint in run_dir"):
        train(CFG, tmp_path / "run", data=DATA, progress=False, resume=True)
    train(CFG.replace(epochs=1), tmp_path / "run", data=DATA, progress=False)
    with pytest.raises(ValueError, match=r"config differs .* lr \(saved 0.001, given 0.01\)"):
        train(CFG.replace(lr=0.01), tmp_path / "run", data=DATA, progress=False, resume=True)
    with pytest.raises(ValueError, match="run_dir .* already holds a run"):
        train(CFG, tmp_path / "run", data=DATA, progress=False)


def test_resume_with_other_data_or_process_count_rejected(tmp_path):
    """Resuming mid-epoch on data of another size, or with another process count, is refused."""

    def stop(trainer, epoch, batch):
        if batch == 2:
            trainer.request_stop()

    train(CFG, tmp_path / "run", data=DATA, progress=False, callback=stop)
    with pytest.raises(ValueError, match="resume: the saved epoch covers 160 images"):
        train(CFG, tmp_path / "run", data=synthetic(96), progress=False, resume=True)
    ckpt = resolve_checkpoint(tmp_path / "run")
    state = torch.load(ckpt / "state.pt", weights_only=True)
    state["noise_rng"] = state["noise_rng"] * 2
    torch.save(state, ckpt / "state.pt")
    with pytest.raises(ValueError, match="saved with 2 process"):
        train(CFG, tmp_path / "run", data=DATA, progress=False, resume=True)


def test_trainer_argument_errors(tmp_path):
    """A non-config, bad data values or a batch larger than the data raise naming them."""
    with pytest.raises(TypeError, match="config must be a VAEConfig"):
        Trainer({}, tmp_path)
    bad = VAEData(DATA.train * 2, DATA.val)
    with pytest.raises(ValueError, match=r"data.train must hold values in \[0, 1\]"):
        train(CFG, tmp_path / "a", data=bad, progress=False)
    with pytest.raises(ValueError, match="batch_size must be"):
        train(CFG.replace(batch_size=1000), tmp_path / "b", data=synthetic(8), progress=False)


def test_trains_on_fixed_binarization_amat_files(tmp_path, monkeypatch):
    """dataset='binarized-mnist' reads train/valid/test .amat files (tiny stand-ins here)."""
    from varbayes.vae.data import load_test_data, load_vae_data

    g = torch.Generator().manual_seed(0)
    sizes = {"train": 40, "valid": 8, "test": 6}
    for split, n in sizes.items():
        rows = (torch.rand(n, 784, generator=g) > 0.7).int().tolist()
        text = "".join(" ".join(map(str, r)) + "\n" for r in rows)
        (tmp_path / f"binarized_mnist_{split}.amat").write_text(text)
        monkeypatch.setitem(__import__("varbayes.data.amat").data.amat.BINARIZED_MNIST_ROWS,
                            split, n)  # fmt: skip
    cfg = VAEConfig(dataset="binarized-mnist", hidden=(8,), epochs=1, batch_size=16, val_size=5)
    data = load_vae_data(cfg, tmp_path)
    assert data.train.shape == (40, 784) and data.val.shape == (5, 784)
    assert set(data.train.unique().tolist()) <= {0.0, 1.0}
    r = train(cfg, tmp_path / "run", data_root=tmp_path, progress=False)
    assert r.epochs_done == 1 and r.history[0]["val_elbo"] < 0
    x, labels = load_test_data(cfg, tmp_path, test_size=4)
    assert x.shape == (4, 784) and labels is None


def test_run_without_validation_images_reports_none(tmp_path, capsys):
    """An empty validation set gives val_elbo None and a printable epoch summary."""
    data = VAEData(DATA.train, DATA.train[:0])
    r = train(CFG.replace(epochs=1), tmp_path / "run", data=data, progress=False, verbose=True)
    assert r.history[0]["val_elbo"] is None
    captured = capsys.readouterr()
    assert "val ELBO -" in captured.out + captured.err


@pytest.mark.slow
def test_compiled_training_matches_eager_closely(tmp_path):
    """--compile gives the same ELBO history as eager to within 1e-3 nats (2 epochs)."""
    eager = train(CFG, tmp_path / "a", data=DATA, progress=False)
    comp = train(CFG, tmp_path / "b", data=DATA, progress=False, compile=True)
    for a, b in zip(eager.history, comp.history, strict=True):
        assert a["train_bound"] == pytest.approx(b["train_bound"], abs=1e-3)


@pytest.mark.parametrize(
    "extra",
    [
        dict(prior="vampprior", num_pseudo_inputs=10, kl="mc"),
        dict(stochastic_layers=2, top_hidden=(8,), top_latent_dim=2, kl="mc"),
        dict(stochastic_layers=2, top_hidden=(8,), top_latent_dim=2, objective="iwae",
             num_samples=3, kl="mc"),
    ],
    ids=["vampprior", "two-layers-elbo", "two-layers-iwae"],
)  # fmt: skip
def test_vampprior_and_two_layer_training_lowers_the_loss_and_resumes_exactly(tmp_path, extra):
    """Five epochs raise the validation ELBO by 20+ nats over the initial weights; a
    Ctrl-C-style stop mid-epoch and a resume give the same weights; the checkpoint reloads."""
    cfg = CFG.replace(epochs=5, lr=3e-3, likelihood="gaussian", **extra)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        initial = VAE(cfg)  # the trainer starts from these weights
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = initial.elbo(DATA.val, num_samples=20, kl="mc", generator=g).elbo.mean().item()
    full = train(cfg, tmp_path / "a", data=DATA, progress=False)
    assert full.history[-1]["val_elbo"] > before + 20

    def stop(trainer, epoch, batch):
        if epoch == 2 and batch == 4:
            trainer.request_stop()

    r = train(cfg, tmp_path / "b", data=DATA, progress=False, callback=stop)
    assert r.interrupted
    resumed = train(cfg, tmp_path / "b", data=DATA, progress=False, resume=True)
    assert_same_weights(weights(full.model), weights(resumed.model))
    assert_same_weights(weights(full.model), weights(load_model(tmp_path / "a")))


@pytest.mark.parametrize(
    "flags, check",
    [
        (["--prior", "vampprior", "--pseudo-inputs", "7"],
         dict(prior="vampprior", num_pseudo_inputs=7, kl="mc")),
        (["--stochastic-layers", "2", "--top-hidden", "6,5", "--top-latent-dim", "2",
          "--objective", "iwae", "--k", "2"],
         dict(stochastic_layers=2, top_hidden=(6, 5), top_latent_dim=2, kl="mc")),
    ],
    ids=["vampprior", "two-layers"],
)  # fmt: skip
def test_cli_trains_and_evaluates_vampprior_and_two_layer_models(
    tmp_path, mnist_root, flags, check
):
    """`varbayes vae train --prior vampprior` / `--stochastic-layers 2` (the Monte Carlo KL
    chosen for them) trains 1 epoch on 128 MNIST images; `vae eval` reads the run back."""
    from varbayes.cli import main

    run = tmp_path / "run"
    tiny = ["--hidden", "16", "--latent-dim", "3", "--train-size", "128", "--val-size", "32"]
    args = ["vae", "train", "--out", str(run), "--data-root", mnist_root, "--epochs", "1"]
    assert main([*args, *tiny, *flags, "--no-progress", "--no-plot"]) == 0
    cfg = load_checkpoint(run).config
    assert {k: getattr(cfg, k) for k in check} == check
    ev = ["vae", "eval", str(run), "--data-root", mnist_root, "--k", "4", "--test-size", "20"]
    assert main([*ev, "--no-progress"]) == 0
    assert json.loads((run / "eval.json").read_text())["nll"] > 0


def test_scaled_burda_schedule_keeps_the_stages_in_proportion():
    """burda-scaled over 3,280 epochs is burda; over 328 epochs stage i spans a tenth."""
    full = VAEConfig(lr_schedule="burda", epochs=3280)
    scaled = full.replace(lr_schedule="burda-scaled")
    assert [scaled.learning_rate(e) for e in range(3280)] == [
        full.learning_rate(e) for e in range(3280)
    ]
    short = full.replace(lr_schedule="burda-scaled", epochs=328)
    assert [short.learning_rate(e) for e in range(328)] == [
        full.learning_rate(10 * e) for e in range(328)
    ]
    assert short.learning_rate(327) == pytest.approx(1e-3 * 10**-1)


# ------------------------------------------------------------------ mixed precision
def _dtypes_seen_in_training(tmp_path, precision):
    """(module class name, output dtype) of every module call in the training steps of one
    epoch (the calls with gradients on; evaluation runs without them)."""
    seen = set()

    def record(module, args, out):
        if not torch.is_grad_enabled():
            return
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, torch.Tensor):
                seen.add((type(module).__name__, t.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        cfg = CFG.replace(epochs=1, precision=precision)
        r = train(cfg, tmp_path / precision, data=DATA, progress=False)
    finally:
        handle.remove()
    return seen, r


def test_bf16_mixed_runs_the_layers_in_bfloat16_and_the_rest_in_float32(tmp_path):
    """bf16-mixed: every Linear of the training step outputs bfloat16, the encoder and the
    decoder hand float32 to the latent and likelihood arithmetic, and the weights stay
    float32; fp32 runs everything in float32."""
    seen, r = _dtypes_seen_in_training(tmp_path, "bf16-mixed")
    assert ("Linear", torch.bfloat16) in seen and ("Linear", torch.float32) not in seen
    for net in ("MLPEncoder", "MLPDecoder"):
        assert (net, torch.float32) in seen and (net, torch.bfloat16) not in seen
    assert all(p.dtype == torch.float32 for p in r.model.parameters())
    seen32, _ = _dtypes_seen_in_training(tmp_path, "fp32")
    assert {dt for _, dt in seen32} == {torch.float32}


@NO_BF16_WARNING
def test_bf16_matmul_keeps_float32_tensors_and_restores_the_setting(tmp_path):
    """bf16-matmul: every module of the training step outputs float32 (nothing is cast),
    the weights stay float32, and oneDNN's process-wide setting is what it was after
    training."""
    before = torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision
    seen, r = _dtypes_seen_in_training(tmp_path, "bf16-matmul")
    assert ("Linear", torch.float32) in seen and {dt for _, dt in seen} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in r.model.parameters())
    after = torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision
    assert after == before


@pytest.mark.skipif(not bf16_products_supported(), reason="no bfloat16 products on this CPU")
def test_bf16_products_round_the_inputs_of_float32_products_only_inside():
    """Inside ``bf16_products`` a float32 linear layer and a convolution equal float64
    arithmetic on bfloat16-rounded inputs (to float32 accumulation error), not on the
    exact inputs; outside, and after an exception inside, products are exact again."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 256, generator=g), torch.randn(96, 256, generator=g)
    img, k = torch.randn(4, 3, 16, 16, generator=g), torch.randn(8, 3, 4, 4, generator=g)

    def rounded(t):
        return t.bfloat16().double()

    exact = torch.nn.functional.linear(x, w)
    with bf16_products():
        lin = torch.nn.functional.linear(x, w)
        conv = torch.nn.functional.conv2d(img, k, stride=2)
    assert lin.dtype == conv.dtype == torch.float32
    lin_ref = rounded(x) @ rounded(w).T
    conv_ref = torch.nn.functional.conv2d(rounded(img), rounded(k), stride=2)
    assert (lin.double() - lin_ref).abs().max() < 1e-4 * lin_ref.abs().max()
    assert (conv.double() - conv_ref).abs().max() < 1e-4 * conv_ref.abs().max()
    assert (exact.double() - lin_ref).abs().max() > 1e-3 * lin_ref.abs().max()
    with pytest.raises(RuntimeError, match="inside"), bf16_products():
        raise RuntimeError("inside")
    assert torch.equal(torch.nn.functional.linear(x, w), exact)


def test_bf16_matmul_is_refused_off_the_cpu_and_warned_about_where_unsupported(
    tmp_path, monkeypatch
):
    """On a GPU the oneDNN setting would change nothing: bf16-matmul is refused there,
    naming the device; a CPU without bfloat16 products gets a warning, and an unknown
    precision is refused."""
    with pytest.raises(ValueError, match="precision='bf16-matmul'.*'cuda'.*bf16-mixed"):
        step_precision("bf16-matmul", torch.device("cuda"))
    with pytest.raises(ValueError, match="precision must be one of"):
        step_precision("fp16", torch.device("cpu"))
    trainer_module = importlib.import_module("varbayes.vae.train")
    monkeypatch.setattr(trainer_module, "bf16_products_supported", lambda: False)
    with pytest.warns(RuntimeWarning, match="no bfloat16 products"):
        Trainer(CFG.replace(precision="bf16-matmul"), tmp_path / "r", data=DATA)


def test_bf16_mixed_objective_and_gradient_agree_with_float32():
    """On one batch the bf16-mixed loss is within bfloat16 accuracy of the float32 loss
    (relative 1e-2; 8-bit mantissas) without being equal to it, and the two gradients
    point the same way (cosine > 0.99)."""
    torch.manual_seed(0)
    model = VAE(CFG)
    x = DATA.train.reshape(-1, 36)[:64]
    eps = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for enabled in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss, _ = model.objective(x, eps=eps)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[0] != losses[1]
    assert abs(losses[1] - losses[0]) < 1e-2 * abs(losses[0])
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


@NO_BF16_WARNING
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-matmul"])
def test_reduced_precision_training_learns_as_float32_does(tmp_path, precision):
    """Six epochs (Gaussian decoder, the validation ELBO rises by about 90 nats) end within
    0.5 nats of the float32 run's validation ELBO, with other weights than float32's
    (the products were rounded) where the CPU has bfloat16 products."""
    cfg = CFG.replace(epochs=6, lr=3e-3, likelihood="gaussian")
    ends, runs = {}, {}
    for p in ("fp32", precision):
        runs[p] = train(cfg.replace(precision=p), tmp_path / p, data=DATA, progress=False)
        ends[p] = runs[p].history[-1]["val_elbo"]
        assert runs[p].history[-1]["val_elbo"] > runs[p].history[0]["val_elbo"] + 20
    assert abs(ends[precision] - ends["fp32"]) < 0.5
    if precision == "bf16-mixed" or bf16_products_supported():
        a, b = runs["fp32"].model.parameters(), runs[precision].model.parameters()
        assert any(not torch.equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "extra",
    [
        {"objective": "iwae", "num_samples": 5},
        {"prior": "vampprior", "num_pseudo_inputs": 10},
        {"stochastic_layers": 2, "top_hidden": (8,), "top_latent_dim": 2},
        {"architecture": "conv", "image_shape": (8, 8)},
    ],
    ids=["iwae", "vampprior", "two-layer", "conv"],
)
@NO_BF16_WARNING
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-matmul"])
def test_reduced_precision_trains_every_model_kind_like_float32(tmp_path, extra, precision):
    """IWAE, the VampPrior, two stochastic layers and the conv pair train under bf16-mixed
    and bf16-matmul to a validation ELBO within 0.05 nats of float32's after 3 epochs,
    with float32 weights."""
    data = DATA
    if extra.get("architecture") == "conv":
        x = torch.rand(208, 8, 8, generator=torch.Generator().manual_seed(0))
        data = VAEData(x[:160], x[160:])
    ends = []
    for p in ("fp32", precision):
        cfg = CFG.replace(epochs=3, precision=p, **extra)
        r = train(cfg, tmp_path / p, data=data, progress=False)
        assert all(w.dtype == torch.float32 for w in r.model.parameters())
        ends.append(r.history[-1]["val_elbo"])
    assert abs(ends[1] - ends[0]) < 0.05


def _subnormal_count(optimizer):
    tiny = torch.finfo(torch.float32).tiny
    return sum(
        int(((t != 0) & (t.abs() < tiny)).sum())
        for entry in optimizer.state.values()
        for t in entry.values()
        if t.dim() > 0
    )


def test_the_sweep_keeps_adam_moments_out_of_the_subnormal_range():
    """Weights whose gradient turns to zero: real Adam steps drive their moments into the
    subnormal range; sweeping every SUBNORMAL_SWEEP_EVERY steps keeps every moment normal
    or zero and leaves the parameters as they are."""
    from varbayes.vae.train import SUBNORMAL_SWEEP_EVERY, flush_subnormal_moments

    g0 = torch.logspace(-8, 0, 400).reshape(20, 20)  # first gradients over 8 decades
    runs = {}
    for sweep in (False, True):
        p = torch.nn.Parameter(torch.zeros(20, 20))
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
        counts = []
        for t in range(1, 1001):
            p.grad = g0.clone() if t == 1 else torch.zeros_like(p)
            opt.step()
            if sweep and t % SUBNORMAL_SWEEP_EVERY == 0:
                flush_subnormal_moments(opt)
            counts.append(_subnormal_count(opt))
        runs[sweep] = (p.detach().clone(), counts)
    assert max(runs[False][1]) > 0  # the scenario is real: plain Adam goes subnormal
    assert max(runs[True][1]) == 0
    assert torch.equal(runs[True][0], runs[False][0])


def test_flush_subnormal_moments_zeroes_only_values_near_the_subnormal_range():
    from varbayes.vae.train import flush_subnormal_moments

    p = torch.nn.Parameter(torch.zeros(5))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(5)
    opt.step()
    st = opt.state[p]
    vals = [1e-39, -3e-37, 1e-35, 1e-30, 0.5]  # subnormal, below 1024·tiny twice, normal
    st["exp_avg"].copy_(torch.tensor(vals))
    st["exp_avg_sq"].copy_(torch.tensor(vals).abs())
    step = st["step"].clone()
    flush_subnormal_moments(opt)
    assert st["exp_avg"].tolist() == pytest.approx([0, 0, 0, 1e-30, 0.5], rel=1e-6, abs=0)
    assert st["exp_avg_sq"].tolist() == pytest.approx([0, 0, 0, 1e-30, 0.5], rel=1e-6, abs=0)
    assert torch.equal(st["step"], step)


def test_the_trainer_sweeps_every_sweep_interval(tmp_path, monkeypatch):
    train_module = importlib.import_module("varbayes.vae.train")

    calls = []
    real = train_module.flush_subnormal_moments
    monkeypatch.setattr(
        train_module, "flush_subnormal_moments", lambda opt: calls.append(1) or real(opt)
    )
    cfg = CFG.replace(epochs=7, batch_size=5)  # 160 / 5 = 32 steps an epoch, 224 in all
    train(cfg, tmp_path / "run", data=DATA, progress=False)
    assert len(calls) == 224 // train_module.SUBNORMAL_SWEEP_EVERY
