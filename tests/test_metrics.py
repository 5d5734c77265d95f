"""Each metric on data where the answer is known."""
import numpy as np
import pytest
import torch

from gan_core.data import load_dataset
from gan_core.metrics import (classification_accuracy_score, frechet_distance, label_fidelity, load_or_train,
                              memorization, prdc)


@pytest.fixture(scope="module")
def digits_net(tmp_path_factory):
    ds = load_dataset("digits")
    train, holdout = ds.split(0.2, seed=0)
    cache = tmp_path_factory.mktemp("features")
    net, trained = load_or_train(train, holdout, cache)
    return train, holdout, net, trained, cache


def test_frechet_distance_is_zero_on_itself_and_grows_with_a_known_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    for shift in (0.5, 1.0, 2.0):
        fd = frechet_distance(a, rng.normal(size=(20000, 4)) + shift)
        assert fd == pytest.approx(4 * shift ** 2, rel=0.05, abs=0.02)  # ||mu1 - mu2||^2, same covariance
    # Covariance alone: N(0, I) vs N(0, 4I) in 4-d gives Tr(I + 4I - 2 * 2I) = 4.
    assert frechet_distance(a, 2 * rng.normal(size=(20000, 4))) == pytest.approx(4.0, rel=0.05)
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(a[:1], a)


def test_prdc_known_values():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(500, 8))
    same = prdc(real, real.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    half = prdc(real, np.concatenate([real[:250], real[250:] + 100.0]), k=5)
    assert half["precision"] == 0.5 and half["coverage"] >= 0.5  # the 250 matched reals are covered
    assert half["density"] == pytest.approx(same["density"] / 2, rel=0.01)
    # Mode collapse: all fakes on one real point -> precision 1, recall and coverage tiny.
    collapsed = prdc(real, np.repeat(real[:1], 500, 0) + 1e-6 * rng.normal(size=(500, 8)), k=5)
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] <= 0.03 and collapsed["recall"] <= 0.01
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(real[:3], real)


def test_feature_net_is_accurate_and_trained_once(digits_net):
    train, holdout, net, trained, cache = digits_net
    assert trained and net.holdout_accuracy > 0.9, net.holdout_accuracy
    again, trained_again = load_or_train(train, holdout, cache)
    assert not trained_again and again.holdout_accuracy == net.holdout_accuracy
    x, _ = holdout.tensors()
    assert np.allclose(again.embed(x[:50])[0], net.embed(x[:50])[0])


def test_label_fidelity_of_noise_is_near_chance_and_of_real_images_near_accuracy(digits_net):
    train, holdout, net, _, _ = digits_net
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(2000, 1, 28, 28, generator=gen) * 2 - 1
    requested = torch.randint(0, 10, (2000,), generator=gen).numpy()
    fid = label_fidelity(net.embed(noise)[1], requested, 10)
    assert abs(fid["label_fidelity"] - 0.1) < 0.04, fid
    x, y = holdout.tensors()
    real = label_fidelity(net.embed(x)[1], y.numpy(), 10)
    assert real["label_fidelity"] == pytest.approx(net.holdout_accuracy)
    assert len(real["per_class"]) == 10 and min(real["per_class"]) > 0.7


def test_cas_of_real_data_against_itself_is_near_one(digits_net):
    train, holdout, _, _, _ = digits_net
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    out = classification_accuracy_score(xt, yt, xt, yt, xh, yh, 10, epochs=3, min_steps=100)
    assert out["cas_real"] > 0.85 and abs(out["cas_ratio"] - 1.0) < 0.02, out
    assert out["cas_samples"] == len(xt)  # both sides trained on as many images
    shuffled = classification_accuracy_score(xt, yt[torch.randperm(len(yt))], xt, yt, xh, yh, 10, epochs=3, min_steps=100)
    assert shuffled["cas_ratio"] < 0.4, shuffled  # wrong labels make useless training data
    # Per holdout class: a synthetic set without any 9 teaches no classifier to say 9; the other classes
    # keep their accuracy, and the class means weighted by the holdout's counts give CAS back.
    keep = yt != 9
    no_nines = classification_accuracy_score(xt[keep], yt[keep], xt, yt, xh, yh, 10, epochs=3, min_steps=100)
    assert no_nines["cas_samples"] == int(keep.sum())
    counts = np.bincount(yh.numpy(), minlength=10)
    assert no_nines["cas_per_class"][9] == 0.0 and min(no_nines["cas_per_class"][:9]) > 0.7, no_nines
    assert min(no_nines["cas_real_per_class"]) > 0.7
    for key, per_class in (("cas", "cas_per_class"), ("cas_real", "cas_real_per_class")):
        assert np.dot(no_nines[per_class], counts) / counts.sum() == pytest.approx(no_nines[key])


def test_cas_over_several_classifier_seeds_is_the_mean_of_the_single_seed_scores(digits_net):
    """`seeds` classifiers per side (seeds 3, 4, 5 here): CAS and its real reference are the means of the
    single-seed values, each holdout row counted by the share of classifiers that get it right; the
    single trainings differ, which is what the mean is for."""
    train, holdout, _, _, _ = digits_net
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    synth_x, synth_y = xt[:400].flip(-1), yt[:400]  # mirrored digits: a synthetic set with its own errors
    kw = dict(epochs=1, min_steps=40)
    singles = [classification_accuracy_score(synth_x, synth_y, xt, yt, xh, yh, 10, seed=s, **kw) for s in (3, 4, 5)]
    mean = classification_accuracy_score(synth_x, synth_y, xt, yt, xh, yh, 10, seed=3, seeds=3, **kw)
    assert mean["cas"] == pytest.approx(np.mean([r["cas"] for r in singles]))
    assert mean["cas_real"] == pytest.approx(np.mean([r["cas_real"] for r in singles]))
    assert mean["cas_ratio"] == pytest.approx(mean["cas"] / mean["cas_real"])
    assert mean["cas_ratio_lo"] < mean["cas_ratio"] < mean["cas_ratio_hi"]
    assert len({round(r["cas"], 6) for r in singles}) > 1
    assert singles[0] == classification_accuracy_score(synth_x, synth_y, xt, yt, xh, yh, 10, seed=3, seeds=1, **kw)
    with pytest.raises(ValueError, match="seeds=0"):
        classification_accuracy_score(synth_x, synth_y, xt, yt, xh, yh, 10, seeds=0)


def test_the_real_side_of_cas_is_trained_once_per_data_and_size_and_then_read_back(digits_net, tmp_path,
                                                                                   monkeypatch):
    """With a cache folder the real-trained classifier's holdout hits are kept: a second evaluation of
    other samples trains only the synthetic side and reports the same real reference as without the
    cache; another real subset size or seed trains the real side again."""
    from gan_core.metrics import cas

    train, holdout, _, _, _ = digits_net
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    fits = []
    real_fits = cas.fit_classifiers
    monkeypatch.setattr(cas, "fit_classifiers", lambda f: fits.extend(len(one.x) for one in f) or real_fits(f))
    kw = dict(epochs=1, min_steps=40, cache_dir=tmp_path)
    first = classification_accuracy_score(xt[:300].flip(-1), yt[:300], xt, yt, xh, yh, 10, **kw)
    assert fits == [300, 300] and len(list((tmp_path / "cas_reference").glob("*.npy"))) == 1
    fits.clear()
    again = classification_accuracy_score(xt[300:600], yt[300:600], xt, yt, xh, yh, 10, **kw)
    assert fits == [300] and again["cas_real"] == first["cas_real"]
    assert again["cas_real_per_class"] == first["cas_real_per_class"]
    uncached = classification_accuracy_score(xt[300:600], yt[300:600], xt, yt, xh, yh, 10, epochs=1, min_steps=40)
    assert uncached["cas_real"] == first["cas_real"] and uncached["cas"] == again["cas"]
    fits.clear()
    classification_accuracy_score(xt[:200], yt[:200], xt, yt, xh, yh, 10, **kw)
    classification_accuracy_score(xt[:200], yt[:200], xt, yt, xh, yh, 10, seed=1, **kw)
    assert fits == [200, 200, 200, 200] and len(list((tmp_path / "cas_reference").glob("*.npy"))) == 3


def test_cas_epochs_set_how_long_each_classifier_trains_above_the_step_floor(digits_net):
    """`epochs` passes over the training images per classifier (400 images: 6 steps an epoch), but never
    fewer than `min_steps` steps: 1 epoch is too short to learn the digits, 8 learn them; under a floor
    of 100 steps both train the same 100 steps and agree exactly."""
    train, holdout, _, _, _ = digits_net
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    pick = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))[:400]
    x, y = xt[pick], yt[pick]
    short, long = (classification_accuracy_score(x, y, x, y, xh, yh, 10, epochs=e, min_steps=0) for e in (1, 8))
    assert short["cas_real"] < 0.5 < long["cas_real"] - 0.2, (short["cas_real"], long["cas_real"])
    floored = [classification_accuracy_score(x, y, x, y, xh, yh, 10, epochs=e, min_steps=100) for e in (1, 8)]
    assert floored[0]["cas_real"] == floored[1]["cas_real"] > long["cas_real"]


def test_cas_real_reference_draws_from_every_class_when_the_sample_is_smaller(digits_net):
    """A split stored class by class: a 300-image synthetic set is compared with 300 real images drawn
    at random, not the first 300 (which would be digits 0 and 1 only)."""
    train, holdout, _, _, _ = digits_net
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    order = torch.argsort(yt, stable=True)
    xs, ys = xt[order], yt[order]
    assert set(ys[:300].tolist()) <= {0, 1, 2}
    pick = torch.randperm(len(xt), generator=torch.Generator().manual_seed(1))[:300]
    out = classification_accuracy_score(xt[pick], yt[pick], xs, ys, xh, yh, 10, epochs=3, min_steps=100)
    assert out["cas_real"] > 0.7 and 0.8 < out["cas_ratio"] < 1.25, out


def test_memorization_flags_planted_copies(digits_net):
    train, holdout, net, _, _ = digits_net
    f_train = net.embed(train.tensors()[0])[0]
    f_hold = net.embed(holdout.tensors()[0])[0]
    planted = f_train[:30]
    fresh = f_hold[:150]
    out = memorization(f_train, f_hold[150:], np.concatenate([planted, fresh]))
    flags = out["near_copy_flags"]
    assert flags[:30].all(), "every planted copy is flagged"
    assert flags[30:].mean() < 0.05, flags[30:].mean()
    assert out["near_copy_share"] == pytest.approx((30 + flags[30:].sum()) / 180)


def test_frechet_distance_matches_the_matrix_square_root_formula_and_the_bootstrap_its_gathered_resamples():
    """The distance takes Tr((S1^1/2 S2 S1^1/2)^1/2) from eigenvalues and a Cholesky factor (a matrix
    square root when S1 is singular), and the bootstrap takes each resample's moments from its row
    counts: both give the textbook computation's numbers."""
    from gan_core.metrics.bootstrap import ROUNDS, _interval, fd_interval

    def sqrtm(a):
        w, v = np.linalg.eigh(a)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    def textbook(f1, f2):
        s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
        cross = sqrtm(sqrtm(s1) @ s2 @ sqrtm(s1))
        return float(((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * cross))

    rng = np.random.default_rng(3)
    mix = rng.normal(size=(12, 12))
    real = np.maximum(rng.normal(size=(300, 12)) @ mix, 0) + 5.0  # features far from 0: the covariance's cancellation
    fake = np.maximum(rng.normal(size=(250, 12)) @ mix + 0.4, 0) + 5.0
    dead = real.copy()
    dead[:, 3] = 5.0  # a feature that never moves: S1 is singular, no Cholesky factor
    for f1 in (real, dead):
        assert frechet_distance(f1, fake) == pytest.approx(textbook(f1, fake), rel=1e-7)
        gen = np.random.default_rng([0, 1])  # fd_interval's draws, gathered
        values = [textbook(f1[gen.integers(0, len(f1), len(f1))], fake[gen.integers(0, len(fake), len(fake))])
                  for _ in range(ROUNDS)]
        lo, hi = _interval(np.asarray(values), textbook(f1, fake))
        assert fd_interval(f1, fake) == pytest.approx((max(lo, 0.0), hi), rel=1e-7)


def test_bootstrap_intervals_cover_the_value_shrink_with_samples_and_repeat_for_a_seed():
    from gan_core.metrics import frechet_distance
    from gan_core.metrics.bootstrap import fd_interval, ratio_interval, share_interval

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(400, 8)), rng.normal(0.3, 1.0, size=(400, 8))
    lo, hi = fd_interval(real, fake, rounds=100)
    assert lo < frechet_distance(real, fake) < hi
    # resampling inflates fd: the interval is corrected for it, so it holds the value even when the
    # sets are small against the feature dimension (here every plain percentile lies above it)
    small_real, small_fake = rng.normal(size=(60, 16)), rng.normal(0.1, 1.0, size=(60, 16))
    s_lo, s_hi = fd_interval(small_real, small_fake, rounds=100)
    assert s_lo < frechet_distance(small_real, small_fake) < s_hi
    assert fd_interval(real, fake, rounds=100) == (lo, hi)  # seeded
    big_lo, big_hi = fd_interval(rng.normal(size=(3000, 8)), rng.normal(0.3, 1.0, size=(3000, 8)), rounds=60)
    assert big_hi - big_lo < (hi - lo) / 2  # ~1/sqrt(n)
    hits = rng.random(2000) < 0.8
    s_lo, s_hi = share_interval(hits)
    assert s_lo < hits.mean() < s_hi and 0.02 < s_hi - s_lo < 0.05  # 2 x 1.96 x sqrt(.8 x .2 / 2000) = 0.035
    r_lo, r_hi = ratio_interval(hits, hits)
    assert r_lo == r_hi == 1.0  # the same rows: the ratio cannot move
    other = rng.random(2000) < 0.9
    r_lo, r_hi = ratio_interval(hits, other)
    assert r_lo < hits.mean() / other.mean() < r_hi


def test_comparing_in_parts_keeps_the_protocols_scale_and_tells_a_shift_from_noise():
    """Features are the images themselves (a stand-in net): a set from the holdout's distribution
    measures as the protocol's one-set fd does on average, with a small standard error; a shifted set
    is told apart by far more than the errors; labels count as label fidelity."""
    from gan_core.metrics import compare_in_parts

    class Identity:
        def embed(self, x):
            f = x.reshape(len(x), -1).double().numpy()
            probs = np.eye(3)[(f[:, 0] > 0).astype(int)]  # predicts class 1 for a positive first feature
            return f, probs

    rng = np.random.default_rng(0)
    hold = torch.from_numpy(rng.normal(size=(200, 4))).float()
    same = torch.from_numpy(rng.normal(size=(1000, 4))).float()
    shifted = same + 0.5
    labels = torch.ones(1000, dtype=torch.int64)
    out = compare_in_parts(Identity(), hold, {"same": (same, labels), "shifted": (shifted, None)}, 3)
    assert out["parts"] == 5 and out["rows_per_part"] == 200
    s, t = out["sets"]["same"], out["sets"]["shifted"]
    one_set = np.mean([frechet_distance(hold.double().numpy(), same[j::5].double().numpy()) for j in range(5)])
    assert s["fd"]["mean"] == pytest.approx(one_set) and s["fd"]["se"] < 0.05
    assert t["fd"]["mean"] - s["fd"]["mean"] > 0.8 > 5 * (s["fd"]["se"] + t["fd"]["se"])
    assert s["label_fidelity"]["mean"] == pytest.approx(float((same[:, 0] > 0).double().mean()), abs=1e-9)
    assert "label_fidelity" not in t and 0 < t["precision"]["mean"] < s["precision"]["mean"]
    with pytest.raises(ValueError, match="at least 400 rows"):
        compare_in_parts(Identity(), hold, {"few": (same[:300], None)}, 3)


def test_cas_classifiers_train_at_most_max_steps_on_both_sides_and_say_how_long(digits_net, monkeypatch):
    """`max_steps` caps every CAS classifier, the synthetic and the real one alike (the ratio compares
    equal training), `cas_steps` reports it, and the real side's cache keeps the capped and uncapped
    apart; mnist5k's 4,500 images at 8 epochs (562 batches) sit under the default cap of 600."""
    from gan_core.metrics import cas, classifier
    from pipelines.config import EvalConfig

    train, holdout, _, _, _ = digits_net
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    steps = []
    real = classifier.fit_classifiers
    monkeypatch.setattr(cas, "fit_classifiers", lambda f: steps.extend(one.steps() for one in f) or real(f))
    out = classification_accuracy_score(xt[:640], yt[:640], xt, yt, xh, yh, 10, epochs=8, min_steps=20, max_steps=30)
    assert steps == [30, 30] and out["cas_steps"] == 30
    assert classifier.classifier_steps(640, 8, 20) == 80  # uncapped: 8 epochs of 10 batches
    assert classifier.classifier_steps(4500, 8, max_steps=EvalConfig().cas_max_steps) == 8 * (4500 // 64)
    assert classifier.classifier_steps(54000, 8, max_steps=EvalConfig().cas_max_steps) == 600


@pytest.mark.parametrize("max_steps, steps", [(None, 400), (350, 350), (10, 300)])
def test_the_feature_network_trains_at_most_max_steps_and_at_least_min_steps(monkeypatch, max_steps, steps):
    from gan_core.metrics import classifier

    calls, real = [], classifier.F.cross_entropy
    monkeypatch.setattr(classifier.F, "cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y = torch.zeros(6400, 1, 8, 8), torch.arange(6400) % 2  # 100 batches of 64: 4 epochs are 400 steps
    classifier.fit_classifier(x, y, 2, epochs=4, max_steps=max_steps)
    assert len(calls) == steps


def test_a_classifier_trained_channels_last_is_the_same_classifier_in_the_usual_layout(digits_net):
    """`fit_classifier` trains in NHWC by default (faster on oneDNN for these small convs): the same
    arithmetic up to float rounding, so the two layouts agree on the holdout and reach the same accuracy,
    and the model comes back in the usual contiguous layout (the cache and every caller see no change)."""
    from gan_core.metrics.classifier import accuracy, fit_classifier

    train, holdout, _, _, _ = digits_net
    xt, yt = train.tensors()
    xh, yh = holdout.tensors()
    nhwc, nchw = (fit_classifier(xt[:1000], yt[:1000], 10, epochs=1, seed=2, min_steps=60, channels_last=cl)
                  for cl in (True, False))
    assert all(p.is_contiguous() for p in nhwc.parameters())
    acc_nhwc, acc_nchw = accuracy(nhwc, xh, yh), accuracy(nchw, xh, yh)
    assert abs(acc_nhwc - acc_nchw) < 0.03 and acc_nhwc > 0.7
    with torch.no_grad():
        agree = (nhwc(xh).argmax(1) == nchw(xh).argmax(1)).float().mean()
    assert agree > 0.9, agree


def test_classifiers_trained_side_by_side_are_each_the_lone_one_thread_training_of_their_seed(digits_net):
    """`fit_classifiers` trains several classifiers at once, each on one intra-op thread: every model
    is bit for bit the one `fit_classifier` trains from its seed on one thread alone (so CAS's numbers
    do not depend on what trains beside a classifier, nor on the machine's cores), and the process's
    thread count is back after."""
    from gan_core.metrics.classifier import SIDE_BY_SIDE_THREADS, Fit, fit_classifier, fit_classifiers

    train, _, _, _, _ = digits_net
    xt, yt = train.tensors()
    fits = [Fit(xt[i * 300:(i + 1) * 300], yt[i * 300:(i + 1) * 300], 10, 1, seed, min_steps=30)
            for i, seed in enumerate((3, 4, 5))]
    threads = torch.get_num_threads()
    together = fit_classifiers(fits)
    assert torch.get_num_threads() == threads
    torch.set_num_threads(SIDE_BY_SIDE_THREADS)
    try:
        alone = fit_classifier(fits[1].x, fits[1].y, 10, 1, 4, min_steps=30)
    finally:
        torch.set_num_threads(threads)
    weights = together[1].state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in alone.state_dict().items())
    assert not torch.equal(together[0].state_dict()["head.weight"], weights["head.weight"])
