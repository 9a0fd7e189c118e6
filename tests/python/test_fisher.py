"""Tests of nnpress.fisher: per-example Fisher diagonals against brute force, the K-FAC hessians,
and the sensitivity probe."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nnpress.fisher import fisher_diagonal, probe_sensitivity

# ---------------------------------------------------------------------------------------------
# Models and helpers
# ---------------------------------------------------------------------------------------------


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyCNN()


def classification_batches(shape, n_classes, sizes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((b, *shape), generator=g), torch.randint(0, n_classes, (b,), generator=g)) for b in sizes]


def brute_force_classifier(model, batches, mode, seed):
    """Per example: forward, (sample y with the documented per-batch draw), backward, square."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    count = 0
    for x, labels in batches:
        with torch.no_grad():
            logits = model(x)
        if mode == "sampled":
            u = torch.rand(x.shape[0], dtype=torch.float64, generator=g)
            cdf = torch.softmax(logits.double(), -1).cumsum(-1)
            y = torch.stack([torch.searchsorted(cdf[i], u[i : i + 1], right=True)[0] for i in range(len(u))]).clamp(
                max=logits.shape[-1] - 1
            )
        else:
            y = labels
        for i in range(x.shape[0]):
            model.zero_grad()
            logp = torch.log_softmax(model(x[i : i + 1]), -1)[0, y[i]]
            logp.backward()
            for n, p in params.items():
                acc[n] += p.grad.double() ** 2
            count += 1
    return {n: (a / count).float() for n, a in acc.items()}


def assert_fisher_close(actual, expected, rel=1e-5):
    assert list(actual) == list(expected)
    for name in expected:
        a, e = actual[name], expected[name]
        assert a.shape == e.shape, name
        scale = e.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(a, e, rtol=rel, atol=rel * scale, msg=name)


# ---------------------------------------------------------------------------------------------
# Against brute force
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_sampled_mlp_matches_brute_force(chunk_size):
    model = tiny_mlp()
    batches = classification_batches((6,), 4, sizes=(7, 5))
    got = fisher_diagonal(model, batches, mode="sampled", seed=123, chunk_size=chunk_size)
    assert_fisher_close(got, brute_force_classifier(model, batches, "sampled", 123))


def test_sampled_cnn_matches_brute_force():
    model = tiny_cnn()
    batches = classification_batches((1, 6, 6), 5, sizes=(6, 6, 4))
    got = fisher_diagonal(model, batches, mode="sampled", seed=7)
    assert_fisher_close(got, brute_force_classifier(model, batches, "sampled", 7))


def test_empirical_matches_brute_force_and_differs_from_sampled():
    model = tiny_cnn()
    batches = classification_batches((1, 6, 6), 5, sizes=(8, 8))
    empirical = fisher_diagonal(model, batches, mode="empirical")
    sampled = fisher_diagonal(model, batches, mode="sampled")
    assert_fisher_close(empirical, brute_force_classifier(model, batches, "empirical", 0))
    for name in empirical:
        assert (empirical[name] >= 0).all() and (sampled[name] >= 0).all()
        assert empirical[name].sum() > 0 and sampled[name].sum() > 0
    assert any(not torch.allclose(empirical[n], sampled[n], rtol=1e-2) for n in empirical)


def test_loop_and_vmap_agree():
    model = tiny_cnn()
    batches = classification_batches((1, 6, 6), 5, sizes=(9, 3))
    for mode in ("sampled", "empirical"):
        by_vmap = fisher_diagonal(model, batches, mode=mode, method="vmap", seed=5)
        by_loop = fisher_diagonal(model, batches, mode=mode, method="loop", seed=5)
        assert_fisher_close(by_loop, by_vmap)


class VmapHostile(nn.Module):
    """Data-dependent Python control flow (.item()), which torch.func.vmap cannot run."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        if x.abs().sum().item() > 1e9:
            x = x * 0
        return self.fc(x)


def test_auto_falls_back_to_loop_when_vmap_fails():
    model = VmapHostile()
    batches = classification_batches((5,), 3, sizes=(6, 4))
    with pytest.raises(RuntimeError):
        fisher_diagonal(model, batches, method="vmap")
    with pytest.warns(RuntimeWarning, match="one by one"):
        auto = fisher_diagonal(model, batches, method="auto", seed=2)
    assert_fisher_close(auto, fisher_diagonal(model, batches, method="loop", seed=2), rel=1e-6)
    assert_fisher_close(auto, brute_force_classifier(model, batches, "sampled", 2))


def test_per_position_logits_ignore_index():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 6), nn.Tanh(), nn.Linear(6, 4))  # (B, T) -> (B, T, 4)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 11, (5, 7), generator=g)
    labels = torch.randint(0, 4, (5, 7), generator=g)
    labels[:, -2:] = -100  # padding positions
    got = fisher_diagonal(model, [(ids, labels)], mode="empirical", output="classifier")

    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(5):
        model.zero_grad()
        logp = torch.log_softmax(model(ids[i : i + 1]), -1)[0]
        keep = labels[i] != -100
        logp[keep].gather(-1, labels[i][keep].unsqueeze(-1)).sum().backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad**2 / 5
    assert_fisher_close(got, expected)


# ---------------------------------------------------------------------------------------------
# Gaussian likelihood: F = J^T J / sigma^2 for a linear model
# ---------------------------------------------------------------------------------------------


def linear_regression_batches(n_batches=4, size=5000):
    g = torch.Generator().manual_seed(11)
    scales = torch.tensor([0.5, 1.0, 2.0, 3.0])
    return [torch.randn((size, 4), generator=g) * scales for _ in range(n_batches)]


def test_gaussian_sampled_approaches_jtj_over_sigma2():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    xs = linear_regression_batches()
    sigma = 0.5
    got = fisher_diagonal(model, xs, output="gaussian", sigma=sigma, seed=4)
    # f = W x + b: d f_i / d W_ij = x_j, d f_i / d b_i = 1, so diag(J^T J)/N = mean(x_j^2), 1.
    x = torch.cat(xs)
    expected_w = (x**2).mean(0).expand(3, 4) / sigma**2
    expected_b = torch.ones(3) / sigma**2
    torch.testing.assert_close(got["weight"], expected_w, rtol=0.05, atol=0)
    torch.testing.assert_close(got["bias"], expected_b, rtol=0.05, atol=0)
    # The scale is exactly 1/sigma^2 for the same draw.
    unit = fisher_diagonal(model, xs, output="gaussian", sigma=1.0, seed=4)
    for n in got:
        torch.testing.assert_close(got[n] * sigma**2, unit[n], rtol=1e-6, atol=0)


def test_gaussian_empirical_exact_for_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(64, 4, generator=g)
    y = torch.randn(64, 3, generator=g)
    sigma = 2.0
    got = fisher_diagonal(model, [(x, y)], mode="empirical", sigma=sigma)  # auto: float y -> gaussian
    with torch.no_grad():
        r = (y - model(x)) / sigma**2  # score of W_ij is r_i x_j
    torch.testing.assert_close(got["weight"], (r.T**2) @ (x**2) / 64, rtol=1e-5, atol=0)
    torch.testing.assert_close(got["bias"], (r**2).mean(0), rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------------
# Batches as dicts, HF-style and tuple outputs
# ---------------------------------------------------------------------------------------------


class TinyEncoder(nn.Module):
    """Looks like a Hugging Face encoder: keyword inputs, an output object with last_hidden_state."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 8)
        self.mix = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, input_ids, attention_mask, return_dict=True):
        assert return_dict is True
        h = self.norm(torch.tanh(self.mix(self.embed(input_ids))))
        h = h * attention_mask.unsqueeze(-1).to(h.dtype)
        return SimpleNamespace(last_hidden_state=h, pooler_output=None)


def encoder_batches():
    g = torch.Generator().manual_seed(2)
    out = []
    for size in (4, 3):
        ids = torch.randint(0, 20, (size, 6), generator=g)
        mask = torch.ones(size, 6, dtype=torch.long)
        mask[:, 4:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "return_dict": True})
    return out


def test_dict_batches_and_hidden_state_output():
    model = TinyEncoder()
    batches = encoder_batches()
    auto = fisher_diagonal(model, batches, seed=1)  # 3-D output, no labels -> gaussian
    explicit = fisher_diagonal(model, batches, output="gaussian", output_fn=lambda o: o.last_hidden_state, seed=1)
    loop = fisher_diagonal(model, batches, output="gaussian", method="loop", seed=1)
    assert_fisher_close(auto, explicit, rel=1e-6)
    assert_fisher_close(loop, explicit)
    assert [n for n, _ in model.named_parameters()] == list(auto)
    # A pooled embedding (B, D) via output_fn: must be told it is gaussian.
    pooled = fisher_diagonal(model, batches, output="gaussian", output_fn=lambda o: o.last_hidden_state.mean(1), seed=1)
    assert all(pooled[n].sum() > 0 for n in pooled)


def test_dict_labels_are_taken_out_of_the_model_call():
    model = TinyEncoder()
    batches = [dict(b, labels=torch.randn(b["input_ids"].shape + (8,))) for b in encoder_batches()]
    empirical = fisher_diagonal(model, batches, mode="empirical")  # float labels -> gaussian
    for b in batches:
        with torch.no_grad():
            f = model(b["input_ids"], b["attention_mask"]).last_hidden_state
        assert f.shape == b["labels"].shape
    assert all((v >= 0).all() and v.sum() > 0 for v in empirical.values())


def test_tuple_output_and_positional_tuple_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(2, 4)

        def forward(self, x1, x2):
            logits = self.a(x1) + self.b(x2)
            return logits, {"aux": logits.detach()}

    model = TwoInputs()
    g = torch.Generator().manual_seed(0)
    x1, x2, y = torch.randn(6, 3, generator=g), torch.randn(6, 2, generator=g), torch.arange(6) % 4
    got = fisher_diagonal(model, [((x1, x2), y)], mode="empirical")
    single = nn.Linear(5, 4)
    with torch.no_grad():
        single.weight.copy_(torch.cat([model.a.weight, model.b.weight], 1))
        single.bias.copy_(model.a.bias + model.b.bias)
    ref = fisher_diagonal(single, [(torch.cat([x1, x2], 1), y)], mode="empirical")
    torch.testing.assert_close(torch.cat([got["a.weight"], got["b.weight"]], 1), ref["weight"])
    torch.testing.assert_close(got["a.bias"], ref["bias"])
    torch.testing.assert_close(got["b.bias"], ref["bias"])


# ---------------------------------------------------------------------------------------------
# API contract
# ---------------------------------------------------------------------------------------------


def test_names_shapes_filter_and_dtype():
    model = tiny_cnn()
    batches = classification_batches((1, 6, 6), 5, sizes=(4,))
    full = fisher_diagonal(model, batches)
    named = list(model.named_parameters())
    assert list(full) == [n for n, _ in named]
    for n, p in named:
        assert full[n].shape == p.shape and full[n].dtype == torch.float32
        assert full[n].device == p.device and not full[n].requires_grad
    by_callable = fisher_diagonal(model, batches, param_filter=lambda n, p: n.endswith("weight"))
    assert list(by_callable) == ["conv.weight", "fc.weight"]
    by_names = fisher_diagonal(model, batches, param_filter=["fc.bias"])
    assert list(by_names) == ["fc.bias"]
    torch.testing.assert_close(by_names["fc.bias"], full["fc.bias"], rtol=1e-6, atol=0)
    torch.testing.assert_close(by_callable["conv.weight"], full["conv.weight"], rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="nope"):
        fisher_diagonal(model, batches, param_filter=["nope"])


def test_deterministic_given_seed():
    model = tiny_mlp()
    batches = classification_batches((6,), 4, sizes=(16, 16))
    a = fisher_diagonal(model, batches, seed=10)
    b = fisher_diagonal(model, batches, seed=10)
    c = fisher_diagonal(model, batches, seed=11)
    d = fisher_diagonal(model, batches, seed=torch.Generator().manual_seed(10))
    assert all(torch.equal(a[n], b[n]) and torch.equal(a[n], d[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_max_examples_cuts_the_stream():
    model = tiny_mlp()
    batches = classification_batches((6,), 4, sizes=(5, 5, 5))
    cut = fisher_diagonal(model, batches, mode="empirical", max_examples=7)
    x = torch.cat([b[0] for b in batches])[:7]
    y = torch.cat([b[1] for b in batches])[:7]
    assert_fisher_close(cut, fisher_diagonal(model, [(x, y)], mode="empirical"))


def test_max_examples_cut_batch_draws_with_the_kept_size():
    """Sampled mode: the batch cut by max_examples draws its noise for the kept examples only, so the
    result equals that of the batches cut by hand, whatever the chunk size."""
    model = tiny_mlp()
    batches = classification_batches((6,), 4, sizes=(5, 5, 5))
    by_hand = [batches[0], (batches[1][0][:2], batches[1][1][:2])]
    for chunk_size in (None, 2):
        cut = fisher_diagonal(model, batches, max_examples=7, seed=4, chunk_size=chunk_size)
        assert_fisher_close(cut, fisher_diagonal(model, by_hand, seed=4), rel=1e-6)


def test_model_is_left_untouched_and_runs_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(2 * 4 * 4, 3),
    )
    model.train()
    model[0].requires_grad_(False)  # frozen parameters still get a Fisher
    model[5].eval()  # a submodule's own flag must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = classification_batches((1, 6, 6), 3, sizes=(5,))
    got = fisher_diagonal(model, batches, mode="empirical")
    assert got["0.weight"].sum() > 0
    assert model.training and model[1].training and not model[5].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # eval mode: dropout off, batch norm on running statistics -> equals a model built in eval mode
    model.eval()
    assert_fisher_close(got, fisher_diagonal(model, batches, mode="empirical"), rel=1e-6)
    assert not model[0].weight.requires_grad


def test_bad_arguments():
    model = tiny_mlp()
    batches = classification_batches((6,), 4, sizes=(3,))
    with pytest.raises(ValueError, match="needs labels"):
        fisher_diagonal(model, [b[0] for b in batches], mode="empirical")
    with pytest.raises(ValueError, match="mode"):
        fisher_diagonal(model, batches, mode="true")
    with pytest.raises(ValueError, match="sigma"):
        fisher_diagonal(model, batches, output="gaussian", sigma=0)
    with pytest.raises(ValueError, match="no example"):
        fisher_diagonal(model, [])
    with pytest.raises(ValueError, match="do not match"):
        fisher_diagonal(model, [(batches[0][0], batches[0][1][:2])], mode="empirical")
    x = batches[0][0]
    with pytest.raises(TypeError, match="integer class"):
        fisher_diagonal(model, [(x, torch.zeros(3))], output="classifier", mode="empirical")
    with pytest.raises(TypeError, match="batch must be"):
        fisher_diagonal(model, [(batches[0][0], batches[0][1], None)])


# ---------------------------------------------------------------------------------------------
# probe_sensitivity
# ---------------------------------------------------------------------------------------------


class WithIrrelevantLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 2)
        self.ignored = nn.Linear(5, 2)  # computed, then multiplied by zero

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) + 0.0 * self.ignored(x)


def test_probe_sensitivity_finds_irrelevant_layer():
    model = WithIrrelevantLayer()
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sens = probe_sensitivity(model, x, n_probes=3)
    assert list(sens) == [n for n, _ in model.named_parameters()]
    assert sens["ignored.weight"] == 0.0 and sens["ignored.bias"] == 0.0
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert sens[name] > 1e-8, name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sens == probe_sensitivity(model, x, n_probes=3)  # deterministic


def test_probe_sensitivity_scales_quadratically_for_linear_layer():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    small = probe_sensitivity(model, x, ["weight"], rel_noise=0.01, seed=5)
    large = probe_sensitivity(model, x, ["weight"], rel_noise=0.02, seed=5)
    assert large["weight"] == pytest.approx(4 * small["weight"], rel=1e-4)
    # Expected value: noise std s per weight -> E|dW x|^2 / n_out = s^2 * mean |x|^2 summed over inputs.
    s = 0.01 * model.weight.detach().std(unbiased=False).item()
    expected = s**2 * (x**2).sum(1).mean().item()
    many = probe_sensitivity(model, x, ["weight"], rel_noise=0.01, n_probes=400, seed=5)
    assert many["weight"] == pytest.approx(expected, rel=0.15)
    with pytest.raises(ValueError, match="no parameters named"):
        probe_sensitivity(model, x, ["nope"])


# ---------------------------------------------------------------------------------------------
# fisher_hessians / fisher_row_hessians (K-FAC column / row blocks for error feedback)
# ---------------------------------------------------------------------------------------------

from nnpress.fisher import fisher_hessians, fisher_row_hessians  # noqa: E402


class TokenModel(nn.Module):
    """Embedding -> Linear -> mean over the unmasked positions: positions share the weights, and
    masked (padding) positions do not reach the output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(11, 5)
        self.proj = nn.Linear(5, 4)

    def forward(self, ids, mask):
        h = torch.tanh(self.proj(self.emb(ids)))
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)


def test_blocks_of_single_position_model_are_exact():
    """One position per example, so no two positions share a weight's gradient: the column block is
    exactly mean_n |g_n|^2 x_n x_n^T and the row block mean_n |x_n|^2 g_n g_n^T (g_n = y_n - f(x_n) at
    the output layer, x_n its input), and their diagonals are exactly the column / row sums of the
    empirical Fisher diagonal."""
    model = tiny_mlp()
    torch.manual_seed(5)
    x = torch.randn(12, 6)
    y = torch.randn(12, 4)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    cols = fisher_hessians(model, batches, mode="empirical", output="gaussian")
    rows = fisher_row_hessians(model, batches, mode="empirical", output="gaussian")
    diag = fisher_diagonal(model, batches, mode="empirical", output="gaussian")
    assert set(cols) == set(rows) == {"0.weight", "2.weight"}
    assert cols["2.weight"].shape == (8, 8) and rows["2.weight"].shape == (4, 4)
    for name in cols:
        torch.testing.assert_close(torch.diagonal(cols[name]), diag[name].double().sum(0), rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(torch.diagonal(rows[name]), diag[name].double().sum(1), rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        hidden = torch.tanh(model[0](x)).double()
        g = (y - model(x)).double()
    torch.testing.assert_close(
        cols["2.weight"], (hidden * g.square().sum(1, keepdim=True)).T @ hidden / 12, rtol=1e-6, atol=1e-10
    )
    torch.testing.assert_close(
        rows["2.weight"], (g * hidden.square().sum(1, keepdim=True)).T @ g / 12, rtol=1e-6, atol=1e-10
    )
    with pytest.raises(ValueError, match="no \\(selected\\) Linear module"):
        fisher_row_hessians(nn.Sequential(nn.Embedding(4, 3)), [torch.tensor([[1, 2]])])


def brute_force_blocks(model, ids, mask, eps):
    """Per-position gradients by autograd on one example at a time, summed as the contract says."""
    out = {"emb": torch.zeros(5, 5, dtype=torch.float64), "proj": torch.zeros(5, 5, dtype=torch.float64)}
    for n in range(ids.shape[0]):
        e = model.emb(ids[n : n + 1]).detach().requires_grad_(True)
        z = model.proj(e)
        h = torch.tanh(z)
        m = mask[n : n + 1].unsqueeze(-1).to(h.dtype)
        f = (h * m).sum(1) / m.sum(1)
        ge, gz = torch.autograd.grad((eps[n : n + 1] * f).sum(), [e, z])
        ge, gz, x = ge[0].double(), gz[0].double(), e[0].detach().double()
        out["emb"] += ge.T @ ge
        out["proj"] += (x * (gz * gz).sum(1, keepdim=True)).T @ x
    return {k: v / ids.shape[0] for k, v in out.items()}


def test_hessians_match_brute_force_with_shared_positions_and_padding():
    model = TokenModel()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 11, (6, 7), generator=gen)
    mask = torch.ones(6, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[4, 2:] = 0
    batch = {"ids": ids, "mask": mask}
    blocks = fisher_hessians(model, [batch], output="gaussian", draws=1, seed=9)
    # the one draw of the sampled gaussian: eps ~ N(0, I) of the output's shape (fisher_diagonal's rule)
    eps = torch.randn((6, 4), dtype=torch.float32, generator=torch.Generator().manual_seed(9))
    want = brute_force_blocks(model, ids, mask, eps)
    torch.testing.assert_close(blocks["emb.weight"], want["emb"], rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(blocks["proj.weight"], want["proj"], rtol=1e-5, atol=1e-10)
    # padding never reaches the output: changing padded tokens changes nothing
    ids2 = ids.clone()
    ids2[1, 4:] = (ids2[1, 4:] + 3) % 11
    again = fisher_hessians(model, [{"ids": ids2, "mask": mask}], output="gaussian", draws=1, seed=9)
    torch.testing.assert_close(again["proj.weight"], blocks["proj.weight"], rtol=1e-6, atol=1e-12)


def test_hessians_draws_average_and_restore_the_model():
    model = TokenModel()
    model.train()
    ids = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(1))
    batch = {"ids": ids, "mask": torch.ones(4, 5, dtype=torch.long)}
    model.emb.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = fisher_hessians(model, [batch], output="gaussian", draws=1, seed=2)
    many = fisher_hessians(model, [batch], output="gaussian", draws=4, seed=2)
    assert model.training and not model.emb.weight.requires_grad and model.proj.weight.requires_grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # the first draw is shared, the average of four differs from it, and both are symmetric PSD
    assert not torch.allclose(one["proj.weight"], many["proj.weight"])
    for h in many.values():
        torch.testing.assert_close(h, h.T)
        assert torch.linalg.eigvalsh(h).min() > -1e-9
    # filter by module name
    only = fisher_hessians(model, [batch], output="gaussian", module_filter=["proj"], draws=1, seed=2)
    assert list(only) == ["proj.weight"]
    torch.testing.assert_close(only["proj.weight"], one["proj.weight"])


def test_hessians_of_a_classifier_and_errors():
    model = tiny_mlp()
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(4))
    blocks = fisher_hessians(model, [x], draws=3)
    assert blocks["0.weight"].shape == (6, 6) and blocks["2.weight"].shape == (8, 8)
    assert torch.all(torch.diagonal(blocks["2.weight"]) > 0)
    with pytest.raises(ValueError, match="draws"):
        fisher_hessians(model, [x], draws=0)
    with pytest.raises(ValueError, match="module_filter"):
        fisher_hessians(model, [x], module_filter=["nope"])
    with pytest.raises(ValueError, match="no \\(selected\\) Linear"):
        fisher_hessians(nn.Sequential(nn.Tanh()), [x])
    with pytest.raises(ValueError, match="labels"):
        fisher_hessians(model, [x], mode="empirical")
    with pytest.raises(ValueError, match="no example"):
        fisher_hessians(model, [])


class TwiceModel(nn.Module):
    """One Linear used twice per forward (the second time by keyword), one never called, one whose
    output the result ignores."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.shared = nn.Linear(4, 4)
        self.never = nn.Linear(4, 4)
        self.ignored = nn.Linear(4, 4)

    def forward(self, x):
        self.ignored(x)
        return self.shared(input=torch.tanh(self.shared(x)))


def test_hessians_add_every_call_and_leave_out_unreached_modules():
    model = TwiceModel()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(7))
    y = torch.randn(5, 4, generator=torch.Generator().manual_seed(8))
    with pytest.warns(RuntimeWarning, match="never depended"):
        blocks = fisher_hessians(model, [(x, y)], mode="empirical", output="gaussian")
    assert list(blocks) == ["shared.weight"]
    with torch.no_grad():
        h1 = torch.tanh(model.shared(x))
        f = model.shared(h1)
    g2 = (y - f).double()  # gradient at the second call's output
    z1 = model.shared(x).detach().requires_grad_(True)
    g1 = torch.autograd.grad((-(0.5) * (y - model.shared(torch.tanh(z1))) ** 2).sum(), z1)[0].double()
    want = (
        (x.double() * (g1 * g1).sum(1, keepdim=True)).T @ x.double()
        + (h1.double() * (g2 * g2).sum(1, keepdim=True)).T @ h1.double()
    ) / 5
    torch.testing.assert_close(blocks["shared.weight"], want, rtol=1e-5, atol=1e-10)


def test_hessians_max_examples_cuts_the_stream():
    """The batch that crosses max_examples is cut (its draws made for the kept examples); later
    batches are not used."""
    model = TokenModel()
    ids = torch.randint(0, 11, (12, 5), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(12, 5, dtype=torch.long)
    batches = [{"ids": ids[i : i + 4], "mask": mask[i : i + 4]} for i in (0, 4, 8)]
    by_hand = [batches[0], {"ids": ids[4:7], "mask": mask[4:7]}]
    for estimator in (fisher_hessians, fisher_row_hessians):
        cut = estimator(model, batches, output="gaussian", max_examples=7, draws=2, seed=1)
        want = estimator(model, by_hand, output="gaussian", draws=2, seed=1)
        assert list(cut) == list(want)
        for name in want:
            torch.testing.assert_close(cut[name], want[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("old", "new"), [("fisher_column_blocks", "fisher_hessians"), ("fisher_row_blocks", "fisher_row_hessians")]
)
def test_former_names_are_deprecated_aliases(old, new):
    import nnpress
    from nnpress import fisher

    model = tiny_mlp()
    x = torch.randn(6, 6, generator=torch.Generator().manual_seed(2))
    for alias in (getattr(nnpress, old), getattr(fisher, old)):
        assert alias.__name__ == old
        with pytest.warns(DeprecationWarning, match=f"nnpress.{new}") as caught:
            got = alias(model, [x], draws=2, seed=3)
        assert caught[0].filename == __file__  # the warning points at the caller
        want = getattr(fisher, new)(model, [x], draws=2, seed=3)
        assert list(got) == list(want) and all(torch.equal(got[n], want[n]) for n in want)
    assert new in nnpress.__all__ and old not in nnpress.__all__


# ---------------------------------------------------------------------------------------------
# fisher_kfac_blocks: both sides from one pass; the draws backpropagated together
# ---------------------------------------------------------------------------------------------

from nnpress.fisher import kfac as kfac_module  # noqa: E402
from nnpress.fisher.kfac import fisher_kfac_blocks  # noqa: E402


def token_batches(seed=5):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n, length in ((4, 6), (3, 4)):
        ids = torch.randint(0, 11, (n, length), generator=gen)
        mask = torch.ones(n, length, dtype=torch.long)
        mask[0, length // 2 :] = 0
        out.append({"ids": ids, "mask": mask})
    return out


def assert_same_blocks(got, want, rtol=1e-12):
    assert list(got) == list(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=0)


@pytest.mark.parametrize("kind", ["gaussian", "classifier", "empirical"])
def test_kfac_blocks_in_one_pass_equal_the_separate_calls(kind):
    """Same seed, same draws: the one pass gives what fisher_hessians and fisher_row_hessians give,
    each side with its own filter (empty collection: nothing on that side)."""
    if kind == "gaussian":
        model, batches, kw = TokenModel(), token_batches(), {"output": "gaussian"}
    else:
        model = tiny_mlp()
        x = torch.randn(10, 6, generator=torch.Generator().manual_seed(8))
        if kind == "classifier":
            batches, kw = [x[:6], x[6:]], {}
        else:
            y = torch.randint(0, 4, (10,), generator=torch.Generator().manual_seed(9))
            batches, kw = [(x[:6], y[:6]), (x[6:], y[6:])], {"mode": "empirical"}
    cols, rows = fisher_kfac_blocks(model, batches, draws=5, seed=4, **kw)
    assert_same_blocks(cols, fisher_hessians(model, batches, draws=5, seed=4, **kw))
    assert_same_blocks(rows, fisher_row_hessians(model, batches, draws=5, seed=4, **kw))
    first = next(n for n, m in model.named_modules() if isinstance(m, nn.Linear))
    cols, rows = fisher_kfac_blocks(model, batches, columns=[first], rows=[], draws=5, seed=4, **kw)
    assert rows == {}
    assert_same_blocks(cols, fisher_hessians(model, batches, module_filter=[first], draws=5, seed=4, **kw))
    cols, rows = fisher_kfac_blocks(model, batches, columns=[], rows=lambda n, m: n == first, draws=5, seed=4, **kw)
    assert cols == {}
    assert_same_blocks(rows, fisher_row_hessians(model, batches, module_filter=[first], draws=5, seed=4, **kw))
    with pytest.raises(ValueError, match="no \\(selected\\) Linear or Embedding module"):
        fisher_kfac_blocks(model, batches, columns=[], rows=[], **kw)
    with pytest.raises(ValueError, match="that the model does not have"):
        fisher_kfac_blocks(model, batches, columns=["nope"], **kw)


@pytest.mark.parametrize("model_kind", ["gaussian", "classifier"])
def test_kfac_draws_batched_or_one_at_a_time_agree(monkeypatch, model_kind):
    """The draws backpropagated together (in groups, and all at once) give the blocks of one
    backward pass per draw; so does the fallback when the batched backward raises."""
    if model_kind == "gaussian":
        model, batches, kw = TokenModel(), token_batches(7), {"output": "gaussian"}
    else:
        model = tiny_mlp()
        batches, kw = [torch.randn(7, 6, generator=torch.Generator().manual_seed(3))], {}
    together = fisher_kfac_blocks(model, batches, draws=6, seed=11, **kw)
    monkeypatch.setattr(kfac_module, "DRAW_BATCH_ELEMENTS", 1)  # one draw per backward pass
    one_by_one = fisher_kfac_blocks(model, batches, draws=6, seed=11, **kw)
    monkeypatch.setattr(kfac_module, "DRAW_BATCH_ELEMENTS", 4 * 7 * (4 + 5 + 8))  # groups of a few draws
    groups = fisher_kfac_blocks(model, batches, draws=6, seed=11, **kw)
    monkeypatch.undo()
    real_grad = torch.autograd.grad

    def no_batched_grad(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("batching rule not implemented")
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batched_grad)
    fallback = fisher_kfac_blocks(model, batches, draws=6, seed=11, **kw)
    for other in (one_by_one, groups, fallback):
        for side in (0, 1):
            assert_same_blocks(together[side], other[side], rtol=1e-10)
