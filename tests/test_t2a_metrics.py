"""FAD (against scipy and the diagonal closed form), FAD∞ (its 1/N fit, against the closed form), KL, CLAP score, attribute accuracy."""

import numpy as np
import pytest
import scipy.linalg

from halm.metrics.t2a import (
    attribute_accuracy,
    clap_score,
    extrapolate_inf,
    fad,
    fad_bootstrap,
    fad_inf,
    frechet_distance,
    kl_divergence,
)


def random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_scipy_sqrtm_on_random_covariances():
    rng = np.random.default_rng(0)
    for d in (2, 8, 32):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_cov(rng, d), random_cov(rng, d)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        want = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8, abs=1e-8)


def test_frechet_distance_diagonal_closed_form_and_identity():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # = 5 + (1 + 1 + 4)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want) == 11.0
    s = random_cov(np.random.default_rng(1), 5)
    assert frechet_distance(mu1[:1].repeat(5), s, mu1[:1].repeat(5), s) == pytest.approx(0.0, abs=1e-9)


def test_fad_from_fewer_clips_than_dimensions_equals_the_covariance_form():
    """With N_r * N_g < D^2 `fad` works in clip space (singular values of the (N_r, N_g) cross matrix).
    Exact on a closed form: {+u, -u} against {c + v, c - v} has covariances 2uu^T and 2vv^T, so
    FD = |c|^2 + 2|u|^2 + 2|v|^2 - 4|u.v|. On random sets it gives the covariance form's number (to that
    form's own rounding: the square roots of its ~1e-14 eigenvalues), repeated clips and N = 2 included."""
    rng = np.random.default_rng(5)
    u, v, c = rng.normal(size=(3, 256))
    want = (c ** 2).sum() + 2 * (u ** 2).sum() + 2 * (v ** 2).sum() - 4 * abs(u @ v)
    with pytest.warns(UserWarning, match="singular"):
        assert fad(np.stack([u, -u]), np.stack([c + v, c - v])) == pytest.approx(want, rel=1e-12)
    for n_ref, n_gen, d in ((6, 6, 256), (147, 147, 256), (2, 9, 40), (30, 12, 64)):
        ref, gen = rng.normal(size=(n_ref, d)), 0.7 * rng.normal(size=(n_gen, d)) + 0.3
        gen[1] = gen[0]
        want = frechet_distance(ref.mean(0), np.cov(ref, rowvar=False), gen.mean(0), np.cov(gen, rowvar=False))
        with pytest.warns(UserWarning, match="singular"):
            assert fad(ref, gen) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        fad(rng.normal(size=(1, 8)), rng.normal(size=(5, 8)))


def test_fad_singular_covariances_do_not_fail_and_warn():
    rng = np.random.default_rng(2)
    ref, gen = rng.normal(size=(10, 32)), rng.normal(size=(10, 32)) + 0.5
    with pytest.warns(UserWarning, match="singular"):
        value = fad(ref, gen)
    assert np.isfinite(value) and value > 0


def test_fad_bootstrap_spread_shrinks_with_more_clips():
    rng = np.random.default_rng(3)
    small = fad_bootstrap(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)) + 1.0, n_boot=100)
    large = fad_bootstrap(rng.normal(size=(800, 4)), rng.normal(size=(800, 4)) + 1.0, n_boot=100)
    assert large["std"] < small["std"]
    assert large["ci95"][0] <= 4.0 <= large["ci95"][1] + 0.5  # true distance = |1,1,1,1|^2 = 4
    assert large["fad"] == pytest.approx(4.0, rel=0.1)


def test_kl_divergence_values():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    want = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)) / 2
    assert kl_divergence(p, q) == pytest.approx(want, rel=1e-6)
    assert kl_divergence(p, q, symmetric=True) == pytest.approx(
        0.5 * (kl_divergence(p, q) + kl_divergence(q, p)), rel=1e-9)
    want_b = 0.5 * np.log(0.5 / 0.1) + 0.5 * np.log(0.5 / 0.9)  # Bernoulli KL(0.5 || 0.1)
    assert kl_divergence(np.array([[0.5]]), np.array([[0.1]]), multilabel=True) == pytest.approx(want_b, rel=1e-6)


def test_clap_score_and_attribute_accuracy():
    t = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert clap_score(t, t * 3) == pytest.approx(1.0)
    assert clap_score(t, np.array([[0.0, 1.0], [0.0, -1.0]])) == pytest.approx(-0.5)
    acc = attribute_accuracy({"tempo": ["fast", "slow", "fast"], "mode": ["major", "minor", "minor"]},
                             {"tempo": ["fast", "fast", "fast"], "mode": ["major", None, "major"]})
    assert acc == {"tempo": pytest.approx(2 / 3), "mode": 0.5}


def test_extrapolate_inf_recovers_an_exact_one_over_n_law():
    ns = [10, 20, 40, 80]
    assert extrapolate_inf(ns, [0.7 + 5.0 / n for n in ns]) == pytest.approx((0.7, 5.0))


def test_fad_inf_removes_the_small_n_bias_of_plain_fad():
    """Gaussians whose Fréchet distance is 1 in closed form (unit covariances, |mu_r - mu_g| = 1):
    plain FAD from 120 generated clips in 16 dimensions is biased upward; FAD∞ lands near 1."""
    d = 16
    shift = np.zeros(d)
    shift[0] = 1.0
    errs_plain, errs_inf = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        ref = rng.normal(size=(20000, d))
        gen = rng.normal(size=(120, d)) + shift
        plain = fad(ref, gen)
        inf = fad_inf(ref, gen, n_min=30, seed=seed)
        assert inf["ns"][0] == 30 and inf["ns"][-1] == 120 and inf["slope"] > 0
        errs_plain.append(plain - 1.0)
        errs_inf.append(inf["fad_inf"] - 1.0)
    assert np.mean(errs_plain) > 0.3  # the bias: E[FAD_N] - FAD ~ d * (a few) / N
    assert abs(np.mean(errs_inf)) < 0.15 and abs(np.mean(errs_inf)) < 0.3 * np.mean(errs_plain)
    with pytest.raises(ValueError, match="more generated clips"):
        fad_inf(ref, gen[:10], n_min=10)
