"""Weight sharing (Deep Compression) and the NumPy MLP it is shown on."""
import numpy as np
import pytest

from refquant.models.mlp import MLPConfig, accuracy, digits_data, init_mlp, mlp_loss_and_grads, train_mlp
from refquant.qat.trained_sharing import finetune_shared, with_shared
from refquant.formats.weight_sharing import SharedWeights, centroid_gradient, compression_ratio, share_weights, update_centroids


def test_compression_ratio_paper_example():
    # Deep Compression fig. 3: 16 weights, 4 clusters, 32-bit: 16*32 / (16*2 + 4*32) = 512 / 160 = 3.2
    assert compression_ratio(16, 4, 32) == 3.2
    with pytest.raises(ValueError, match="must be >= 1"):
        compression_ratio(0, 4)


def test_centroid_gradient_sums_per_cluster_golden():
    idx = np.array([[0, 1], [1, 2]])
    grad = np.array([[0.5, 1.0], [2.0, -3.0]])
    assert centroid_gradient(idx, grad, 4).tolist() == [0.5, 3.0, -3.0, 0.0]  # cluster 1: 1 + 2; cluster 3 empty
    s = SharedWeights(idx.astype(np.uint8), np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    assert update_centroids(s, grad, 0.1).codebook.tolist() == pytest.approx([0.95, 1.7, 3.3, 4.0])


def test_share_weights_uses_at_most_k_values():
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    s = share_weights(w, 4)
    assert len(np.unique(s.dequantize())) <= 4 and s.dequantize().shape == w.shape
    assert s.compression_ratio() == compression_ratio(128, 4)


def test_centroid_gradient_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        centroid_gradient(np.zeros(2, int), np.zeros(3), 2)
    with pytest.raises(ValueError, match="indices must lie"):
        centroid_gradient(np.array([2]), np.zeros(1), 2)


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    p = {k: v.astype(np.float64) for k, v in init_mlp(MLPConfig(5, 7, 3), seed=1).items()}
    p["b1"] += 0.1  # keep ReLUs away from their kink
    x = rng.standard_normal((4, 5))
    y = np.array([0, 2, 1, 2])
    _, g = mlp_loss_and_grads(p, x, y)
    for name in p:
        for idx in [tuple(i) for i in np.argwhere(np.ones_like(p[name]))[:6]]:
            h = 1e-6
            pp = {k: v.copy() for k, v in p.items()}
            pm = {k: v.copy() for k, v in p.items()}
            pp[name][idx] += h
            pm[name][idx] -= h
            num = (mlp_loss_and_grads(pp, x, y)[0] - mlp_loss_and_grads(pm, x, y)[0]) / (2 * h)
            assert g[name][idx] == pytest.approx(num, rel=1e-3, abs=1e-5)


def test_sharing_loses_accuracy_and_centroid_finetuning_recovers_it():
    xtr, ytr, xte, yte = digits_data()
    p = train_mlp(init_mlp(MLPConfig()), xtr, ytr, epochs=30)
    base = accuracy(p, xte, yte)
    assert base > 0.93
    shared = {n: share_weights(p[n], 4) for n in ["W1", "W2"]}
    lossy = accuracy(with_shared(p, shared), xte, yte)
    p2, shared2 = finetune_shared(p, shared, xtr, ytr, epochs=5)
    tuned = accuracy(with_shared(p2, shared2), xte, yte)
    assert lossy < base - 0.03 and tuned > lossy + 0.03
    assert all(np.array_equal(shared[n].indices, shared2[n].indices) for n in shared)  # assignment fixed


# ---------------------------------------------------------------- bad input, closed (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda: compression_ratio(100.5, 4), "n must be an int"),  # was accepted
    (lambda: centroid_gradient(np.zeros(3, np.uint8), np.ones(3), 2**64 - 1), "k must be in"),  # was an OverflowError
    (lambda: centroid_gradient(np.zeros(3, np.uint8), np.ones(3), 2.0), "k must be an int"),
    (lambda: share_weights(np.array([1.0, np.inf]), 2), "w must be finite"),  # used to say "x"
    (lambda: update_centroids(SharedWeights(np.zeros(2, np.uint8), np.ones(1, np.float32)), np.ones(2), float("nan")),
     "lr must be finite"),  # a NaN codebook used to come back
])
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_compression_ratio_of_huge_counts_is_finite():
    # n·32 / (n·2 + 4·32) -> 16 as n grows; Python ints and floats: no overflow, no warning
    assert compression_ratio(10**30, 4) == pytest.approx(16.0)
