"""The caching CPU allocator (:mod:`varbayes.cpu_cache`): the same numbers from other
memory, blocks kept only while installed, the previous allocator restored, nested and
threaded uses safe, a compiled fit bit for bit the same, and a failed build a warning."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

import varbayes.cpu_cache as cpu_cache
import varbayes.vi.svi as svi
from varbayes import vi

pytestmark = pytest.mark.skipif(cpu_cache.library() is None, reason="no C++ compiler here")


def test_tensors_from_the_cache_are_aligned_and_compute_the_same():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 70, generator=g), torch.randn(70, 50, generator=g)
    expected = (a @ b).softmax(-1).sum(0)
    with cpu_cache.cached_cpu_allocations() as on:
        assert on
        for _ in range(3):  # the second and third rounds reuse the first's blocks
            got = (a @ b).softmax(-1).sum(0)
            assert torch.equal(got, expected)
        for n in (0, 1, 7, 64, 1000, 2**18, 2**20 + 1):  # every size class and beyond
            t = torch.empty(n, dtype=torch.uint8)
            assert t.data_ptr() % 64 == 0
            t.fill_(3)
            assert int(t.sum()) == 3 * n
        del t
        assert cpu_cache.cached_bytes() > 0
    assert cpu_cache.cached_bytes() == 0  # the lists are emptied on the way out
    del got  # allocated inside, freed outside: back to the C library
    assert cpu_cache.cached_bytes() == 0
    torch.empty(1000)
    assert cpu_cache.cached_bytes() == 0  # the previous allocator serves again


def test_nested_and_threaded_uses_restore_the_allocator_once():
    errors = []

    def work():
        try:
            with cpu_cache.cached_cpu_allocations():
                for _ in range(200):
                    x = torch.arange(500.0)
                    assert float(x.sum()) == 124750.0
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with cpu_cache.cached_cpu_allocations():
        with cpu_cache.cached_cpu_allocations():
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        torch.empty(100)
        held = cpu_cache.cached_bytes()
        del_me = torch.empty(100)
        del del_me
        assert cpu_cache.cached_bytes() >= held  # still installed after the inner exit
    assert cpu_cache.cached_bytes() == 0 and not errors


def test_a_compiled_fit_takes_the_same_steps_with_and_without_the_cache(monkeypatch):
    """fit(compile=True) on eight schools: the ELBO trace and the parameters are the
    same bit for bit whichever allocator serves the loop's buffers."""
    from test_vi_svi import _eight_schools  # the tests' own eight schools

    results = []
    for use in (False, True):
        ctx = cpu_cache.cached_cpu_allocations if use else contextlib.nullcontext
        monkeypatch.setattr(svi, "cached_cpu_allocations", ctx)
        model = _eight_schools()
        guide = vi.MeanFieldNormal(model.dim, dtype=torch.float64)
        r = svi.fit(model, guide, num_steps=300, rtol=0, window=20, seed=3, compile=True)
        assert r.state.compiled.steps_per_call > 1  # the compiled loop ran
        results.append((r.history, guide.flat.detach().clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])


def test_a_failed_build_warns_once_and_the_context_does_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_cache, "_state", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(cpu_cache, "_compiler", lambda: "/bin/false")
    with pytest.warns(RuntimeWarning, match="caching CPU allocator is not used.*build failed"):
        assert cpu_cache.library() is None
    with cpu_cache.cached_cpu_allocations() as on:
        assert not on
    assert cpu_cache.library() is None  # no second warning, no second build
    assert not list((tmp_path / "varbayes" / "cpu_cache").glob("*.so*"))  # nothing half-written


def test_the_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setattr(cpu_cache, "_state", {})
    monkeypatch.setenv("VARBAYES_CPU_CACHE", "0")
    assert cpu_cache.library() is None
    with cpu_cache.cached_cpu_allocations() as on:
        assert not on


def test_a_read_only_cache_directory_builds_in_a_temporary_one(monkeypatch, tmp_path):
    blocked = tmp_path / "file"  # a file where the cache directory's parent should be
    blocked.write_text("")
    monkeypatch.setattr(cpu_cache, "_cache_dir", lambda: blocked / "varbayes" / "cpu_cache")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(cpu_cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = cpu_cache._build(cpu_cache._compiler())
    assert path.is_file() and path.is_relative_to(tmp_path / "tmp")
    assert not list((tmp_path / "tmp").rglob("*.tmp"))  # nothing half-written left
