"""The case catalog: size, metadata, the seed examples verbatim, tag coverage, Case validation."""

from __future__ import annotations

import numpy as np
import pytest

from cases import CASES, Case

SEED002 = [55.8906, -114.5621, 6.3440, -30.2473, -44.1440]


def find(logits, **attrs) -> list[Case]:
    """Catalog cases whose logits equal `logits` exactly (shape included) and match `attrs`."""
    want = np.asarray(logits, dtype=np.float64)
    out = []
    for c in CASES:
        if c.logits.shape != want.shape or not np.array_equal(c.logits, want):
            continue
        if all(np.array_equal(np.asarray(getattr(c, k)), np.asarray(v)) for k, v in attrs.items()):
            out.append(c)
    return out


def test_size_and_unique_names():
    assert len(CASES) >= 60
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert all(n and n.strip() == n and " " not in n for n in names)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_metadata(case):
    assert isinstance(case.description, str) and case.description.strip()
    assert isinstance(case.tags, tuple) and case.tags
    assert all(isinstance(t, str) and t for t in case.tags)
    assert isinstance(case.seed, (int, np.integer))
    assert case.logits.dtype == np.float64 and case.logits.ndim >= 1 and case.n_classes >= 1
    assert case.targets.shape == case.logits.shape[:-1]
    assert case.targets.dtype == np.int64
    assert ((0 <= case.targets) & (case.targets < case.n_classes)).all()
    assert case.probs.shape == case.logits.shape
    assert np.isfinite(case.temperature) and case.temperature > 0


def test_seed000_batch():
    got = find([[2, 1, 0.1], [1000, 1, -1000], [3, 2, 1]], targets=[0, 2, 1])
    assert got, "seed000 batch missing"
    assert "seed" in got[0].tags
    assert got[0].temperature == 1.0


@pytest.mark.parametrize("T", [1.0, 10.0, 0.01])
def test_seed002_temperatures(T):
    got = [c for c in find(SEED002, targets=2) if c.temperature == T]
    assert got, f"seed002 vector at T={T} missing"
    assert "seed" in got[0].tags and "temperature" in got[0].tags


@pytest.mark.parametrize("end", [500, 5e5, 1, 1e5])
def test_seed003_linspace(end):
    logits = np.linspace(-1, end, 500).reshape(50, 10)
    got = find(logits, targets=np.arange(50) % 10)
    assert got, f"seed003 linspace(-1, {end:g}, 500) missing"
    assert "seed" in got[0].tags


@pytest.mark.parametrize("logits", [
    [1, 2, 3, 4, 5],
    [12345, 67890, 99999999],
    [[12345, 67890, 99999999], [123, 678, 88888888]],
    [12345, 67890, 999999999],
    [[12345, 67890, 999999999]],
], ids=["vec", "big", "big_2d", "list", "list_2d"])
def test_seed004(logits):
    got = find(logits)
    assert got, f"seed004 {logits} missing"
    assert "seed" in got[0].tags


def test_seed004_vec_target_and_names(catalog):
    for name in ("seed000_batch", "seed002_T1", "seed002_T10", "seed002_T0.01", "seed003_linspace500",
                 "seed003_linspace5e5", "seed003_linspace1", "seed003_linspace1e5", "seed004_vec",
                 "seed004_big", "seed004_big_2d", "seed004_list", "seed004_list_2d"):
        assert name in catalog, name
        assert "seed" in catalog[name].tags


def test_seed_cases_accept_plain_lists():
    c = Case("x", "plain nested ints", [[12345, 67890, 999999999]], targets=[2])
    assert c.logits.dtype == np.float64
    assert c.logits.tolist() == [[12345.0, 67890.0, 999999999.0]]


@pytest.mark.parametrize("tag", ["seed", "overflow", "underflow", "mask", "special", "large-vocab",
                                 "temperature", "random"])
def test_tag_present(tag):
    assert any(tag in c.tags for c in CASES), tag


def test_large_vocab():
    large = [c for c in CASES if "large-vocab" in c.tags]
    assert any(c.n_classes >= 131072 for c in large)
    assert any(c.n_classes % 2 == 1 for c in large)
    assert all(c.n_classes >= 32768 for c in large)


@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0, 1e4])
def test_random_normal_scales(catalog, scale):
    name = f"normal_scale_{scale:g}"
    assert name in catalog
    c = catalog[name]
    assert "random" in c.tags
    assert np.std(c.logits) == pytest.approx(scale, rel=0.1)
    assert abs(np.mean(c.logits)) < 0.2 * scale


def test_special_cases_have_special_values():
    special = [c for c in CASES if "special" in c.tags]
    assert any(np.isnan(c.logits).any() for c in special)
    assert any((c.logits == np.inf).any() for c in special)
    assert any((c.logits == -np.inf).all(axis=-1).any() for c in special)
    masked = [c for c in CASES if "mask" in c.tags]
    assert all((c.logits == -np.inf).any() for c in masked)


def test_temperature_cases_vary_temperature():
    temps = {c.temperature for c in CASES if "temperature" in c.tags}
    assert {1.0, 10.0, 0.01} <= temps
    assert any(t < 1 for t in temps) and any(t > 1 for t in temps)


def test_catalog_is_deterministic():
    import importlib

    import cases.catalog as cat

    before = {c.name: c.logits.copy() for c in cat.CASES}
    importlib.reload(cat)
    for c in cat.CASES:
        np.testing.assert_array_equal(c.logits, before[c.name])


# --- Case validation -------------------------------------------------------------------------------

def test_default_targets_and_probs():
    c = Case("d", "defaults", np.zeros((2, 3, 4)))
    assert c.targets.shape == (2, 3)
    assert c.targets.ravel().tolist() == [0, 1, 2, 3, 0, 1]
    assert (c.probs.sum(axis=-1) == 1).all()
    assert (np.take_along_axis(c.probs, c.targets[..., None], axis=-1) == 1).all()
    v = Case("v", "vector", [1.0, 2.0])
    assert v.targets.shape == () and int(v.targets) == 0
    assert v.n_rows == 1 and v.n_classes == 2


def test_seed_defaults_to_name_hash():
    a = Case("same", "a", [1.0])
    b = Case("same", "b", [2.0])
    c = Case("other", "c", [1.0])
    assert a.seed == b.seed != c.seed
    assert np.array_equal(a.rng("x").standard_normal(3), b.rng("x").standard_normal(3))


@pytest.mark.parametrize("targets", [
    [0, 1, 2],  # one too many
    [0],  # too few
    [[0], [1]],  # extra axis
    np.array(0),  # scalar for a batch
], ids=["too-many", "too-few", "extra-axis", "scalar"])
def test_targets_wrong_shape(targets):
    with pytest.raises(ValueError):
        Case("bad", "bad targets", np.zeros((2, 3)), targets=targets)


@pytest.mark.parametrize("targets", [[0, 3], [-1, 0], [0, 100]])
def test_targets_out_of_range(targets):
    with pytest.raises(ValueError):
        Case("bad", "bad targets", np.zeros((2, 3)), targets=targets)


def test_targets_must_be_integers():
    with pytest.raises(ValueError):
        Case("bad", "float targets", np.zeros((2, 3)), targets=np.array([0.0, 1.0]))


@pytest.mark.parametrize("T", [0.0, -1.0, -1e-300, np.inf, np.nan])
def test_bad_temperature(T):
    with pytest.raises(ValueError):
        Case("bad", "bad T", np.zeros((2, 3)), temperature=T)


def test_probs_wrong_shape():
    with pytest.raises(ValueError):
        Case("bad", "bad probs", np.zeros((2, 3)), probs=np.ones((2, 4)) / 4)


@pytest.mark.parametrize("logits", [np.float64(1.0), np.zeros((2, 0))], ids=["scalar", "no-classes"])
def test_logits_need_a_class_axis(logits):
    with pytest.raises(ValueError):
        Case("bad", "bad logits", logits)
