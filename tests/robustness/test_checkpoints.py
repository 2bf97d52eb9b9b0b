"""Damaged, truncated and edited checkpoints: refused with a message naming the file or the
field, through the API and every command that reads them; the run is left as it was."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from varbayes.vae.checkpoint import load_checkpoint, resolve_checkpoint

from .helpers import assert_one_line_error, run_cli, snapshot


def _ckpt(run):
    return resolve_checkpoint(run)


def _rewrite_weights(run, change):
    """Apply ``change(weights)`` and save with the original metadata (a consistent edit)."""
    from safetensors import safe_open

    path = _ckpt(run) / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    w = load_file(str(path))
    change(w)
    save_file(w, str(path), metadata=meta)


def _set_first(value):
    def change(w):
        key = sorted(w)[0]
        w[key] = w[key].clone()
        w[key].view(-1)[0] = value

    return change


def _edit_json(name, edit, in_checkpoint=True):
    def damage(run):
        path = (_ckpt(run) if in_checkpoint else run) / name
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))

    return damage


def _write(name, content, in_checkpoint=True):
    def damage(run):
        path = (_ckpt(run) if in_checkpoint else run) / name
        path.write_bytes(content(path) if callable(content) else content)

    return damage


def _remove(name):
    def damage(run):
        (_ckpt(run) / name).unlink()

    return damage


class _Boom:  # a pickle that would run code when loaded
    def __reduce__(self):
        return (print, ("pwned",))


def _pickle_state(path):
    return pickle.dumps({"epoch": 1, "payload": _Boom()})


# (id, damage, fragments of the message, whether the weights/config path sees it)
DAMAGES = [
    (
        "weights-truncated",
        _write("model.safetensors", lambda p: p.read_bytes()[:100]),
        ["model.safetensors", "corrupted"],
        True,
    ),
    ("weights-empty", _write("model.safetensors", b""), ["model.safetensors", "corrupted"], True),
    (
        "weights-garbage",
        _write("model.safetensors", b"\x00\xffnot safetensors" * 50),
        ["model.safetensors", "corrupted"],
        True,
    ),
    (
        "weights-pickle",
        _write("model.safetensors", _pickle_state),
        ["model.safetensors", "corrupted"],
        True,
    ),
    (
        "weights-nan",
        lambda run: _rewrite_weights(run, _set_first(float("nan"))),
        ["model.safetensors", "NaN or infinite", "tensor '"],
        True,
    ),
    (
        "weights-inf",
        lambda run: _rewrite_weights(run, _set_first(float("inf"))),
        ["model.safetensors", "NaN or infinite"],
        True,
    ),
    (
        "weights-missing-tensor",
        lambda run: _rewrite_weights(run, lambda w: w.pop(sorted(w)[0])),
        ["incompatible", "missing"],
        True,
    ),
    (
        "weights-extra-tensor",
        lambda run: _rewrite_weights(run, lambda w: w.__setitem__("extra.weight", torch.zeros(2))),
        ["unexpected"],
        True,
    ),
    (
        "config-likelihood-edited",
        _edit_json("config.json", lambda d: d.update(likelihood="gaussian", binarize="none")),
        ["config.json", "likelihood"],
        True,
    ),
    (
        "config-activation-edited",
        _edit_json("config.json", lambda d: d.update(activation="tanh")),
        ["config.json", "activation", "edited"],
        True,
    ),
    (
        "config-latent-dim-edited",
        _edit_json("config.json", lambda d: d.update(latent_dim=3)),
        ["incompatible", "latent_dim=3"],
        True,
    ),
    (
        "config-unknown-field",
        _edit_json("config.json", lambda d: d.update(bogus=1)),
        ["config.json", "bogus"],
        True,
    ),
    (
        "config-invalid-value",
        _edit_json("config.json", lambda d: d.update(latent_dim=-1)),
        ["config.json", "latent_dim"],
        True,
    ),
    ("config-not-json", _write("config.json", b"{not json"), ["config.json", "JSON"], True),
    ("config-missing", _remove("config.json"), ["config"], True),
    (
        "latest-outside",
        _edit_json("latest.json", lambda d: d.update(checkpoint="../../.."), in_checkpoint=False),
        ["latest.json", "outside"],
        True,
    ),
    (
        "latest-absolute",
        _edit_json("latest.json", lambda d: d.update(checkpoint="/tmp"), in_checkpoint=False),
        ["latest.json", "outside"],
        True,
    ),
    (
        "latest-sibling",
        _edit_json("latest.json", lambda d: d.update(checkpoint="."), in_checkpoint=False),
        ["latest.json", "outside"],
        True,
    ),
    (
        "latest-garbage",
        _write("latest.json", b"\x00garbage", in_checkpoint=False),
        ["latest.json", "corrupted"],
        True,
    ),
    (
        "latest-number",
        _edit_json("latest.json", lambda d: d.update(checkpoint=7), in_checkpoint=False),
        ["latest.json", "corrupted"],
        True,
    ),
    (
        "latest-missing-target",
        _edit_json(
            "latest.json",
            lambda d: d.update(checkpoint="checkpoints/epoch-9999"),
            in_checkpoint=False,
        ),
        ["latest.json", "epoch-9999"],
        True,
    ),
    ("weights-missing", _remove("model.safetensors"), ["model.safetensors"], True),
    (
        "state-pickle-payload",
        _write("state.pt", lambda p: _torch_pickle()),
        ["state.pt", "refusing"],
        False,
    ),
    (
        "state-truncated",
        _write("state.pt", lambda p: p.read_bytes()[:64]),
        ["state.pt", "corrupted"],
        False,
    ),
    ("state-garbage", _write("state.pt", b"garbage" * 10), ["state.pt", "corrupted"], False),
    (
        "state-not-a-dict",
        _write("state.pt", lambda p: _torch_bytes([1, 2, 3])),
        ["state.pt", "not a varbayes VAE state"],
        False,
    ),
    ("state-missing", _remove("state.pt"), ["state.pt"], False),
]


def _torch_bytes(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _torch_pickle():
    return _torch_bytes({"epoch": 1, "payload": _Boom()})


COMMANDS = {
    "eval": lambda run: ["vae", "eval", run, "--no-progress"],
    "plot": lambda run: ["vae", "plot", run],
    "resume": lambda run: ["vae", "train", "--resume", "--out", run, "--no-progress"],
}

CLI_CASES = [
    (d[0], cmd)
    for d in DAMAGES
    for cmd in COMMANDS
    if d[3] or cmd != "eval"  # eval reads no training state
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_load_checkpoint_refuses_damage_naming_the_file(damage, tiny_run, capsys):
    """load_checkpoint raises ValueError/FileNotFoundError naming the file or field; no code
    from the file runs; the run is unchanged."""
    _, apply, fragments, _ = damage
    apply(tiny_run)
    before = snapshot(tiny_run)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        load_checkpoint(tiny_run)
    for f in fragments:
        assert f in str(info.value), (f, str(info.value))
    assert "pwned" not in capsys.readouterr().out
    assert snapshot(tiny_run) == before


@pytest.mark.parametrize("name, command", CLI_CASES, ids=[f"{c}-{n}" for n, c in CLI_CASES])
def test_commands_refuse_damage_with_one_line_and_exit_2(name, command, tiny_run, capsys):
    """eval, plot and train --resume on a damaged run: exit 2, one line naming the file or
    field, nothing written into the run."""
    _, apply, fragments, _ = next(d for d in DAMAGES if d[0] == name)
    apply(tiny_run)
    before = snapshot(tiny_run)
    code, out, err = run_cli(COMMANDS[command](tiny_run), capsys)
    assert code == 2, err
    assert_one_line_error(err, *fragments)
    assert "pwned" not in out
    assert snapshot(tiny_run) == before


def test_an_undamaged_run_loads(tiny_run):
    """The control: the same run, undamaged, loads with its state (so the damage is the cause)."""
    ckpt = load_checkpoint(tiny_run)
    assert ckpt.state["epoch"] == 2 and ckpt.config.latent_dim == 2


def test_eval_never_writes_nan_into_eval_json(tiny_run, monkeypatch, capsys):
    """An evaluation whose numbers are not finite is refused (exit 2, naming them); no
    eval.json appears, so the file never holds the non-standard NaN."""
    import varbayes.vae.data as vae_data
    import varbayes.vae.evaluate as vae_evaluate

    x = torch.rand(8, 36)
    monkeypatch.setattr(vae_data, "load_test_data", lambda *a, **k: (x, None))
    real = vae_evaluate.evaluate

    def evaluate_with_nan(*args, **kwargs):
        metrics = real(*args, **kwargs)
        metrics["elbo"] = float("nan")
        return metrics

    monkeypatch.setattr(vae_evaluate, "evaluate", evaluate_with_nan)
    before = snapshot(tiny_run)
    code, _, err = run_cli(["vae", "eval", tiny_run, "--k", "2", "--no-progress"], capsys)
    assert code == 2
    assert_one_line_error(err, "non-finite elbo", "eval.json")
    assert snapshot(tiny_run) == before
    monkeypatch.setattr(vae_evaluate, "evaluate", real)
    code, _, err = run_cli(["vae", "eval", tiny_run, "--k", "2", "--no-progress"], capsys)
    assert code == 0, err  # the control: the same run evaluates and writes eval.json
    assert "NaN" not in (tiny_run / "eval.json").read_text()
