import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from models.reasoner import Reasoner, ReasonerConfig
from models.reasoner_data import encode_batch, rollout_batch, tokens, transition_batch
from workbench.hooks import UnknownHookError, stack
from workbench.tasks import graph_arith as ga

TASK = ga.GraphArithConfig(n_nodes=10, max_depth=3)


def small(**kw) -> Reasoner:
    torch.manual_seed(0)
    return Reasoner(ReasonerConfig(d_model=32, n_heads=4, d_mlp=64, max_steps=12, task=asdict(TASK), **kw)).eval()


@pytest.fixture(scope="module")
def problems():
    return ga.sample(TASK, 4, 0)


def test_every_site_of_every_step_is_hooked(problems):
    model = small()
    out, cache = model.run_with_cache(tokens(problems, model.cfg), steps=3)
    for t in range(3):
        for name in ["hook_input", "hook_resid_final", "bottleneck.hook_logits", "bottleneck.hook_codes",
                     "bottleneck.hook_embed", "bottleneck.hook_variable_logits"]:
            assert f"steps.{t}.{name}" in cache
        for site in ["hook_resid_pre", "hook_resid_post", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                     "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_mlp_out",
                     "mlp.hook_pre", "mlp.hook_post"]:
            assert f"steps.{t}.blocks.1.{site}" in cache
    assert "steps.3.hook_input" not in cache
    B, L = out.codes.shape[0], out.codes.shape[2]
    assert stack(cache, "blocks.0.attn.hook_pattern").shape == (3, B, 4, L, L)
    assert torch.equal(stack(cache, "bottleneck.hook_codes").transpose(0, 1), out.codes)
    assert model.loop_sizes == {"steps": 12}


def test_patching_a_code_sets_a_variable_value(problems):
    model = small()
    x = tokens(problems, model.cfg)
    clean, cache = model.run_with_cache(x, steps=4)
    pos = int((x[0, :, 0] == ga.VAR).nonzero()[0])
    value = (int(clean.codes[0, 1, pos, 3]) + 5) % 23

    def set_value(codes, hook):
        codes = codes.clone()
        codes[0, pos, 3] = value
        return codes

    with model.hooks(fwd_hooks=[("steps.1.bottleneck.hook_codes", set_value)]):
        patched, pcache = model.run_with_cache(x, steps=4)
    assert int(patched.codes[0, 1, pos, 3]) == value
    assert torch.equal(pcache["steps.1.hook_input"], cache["steps.1.hook_input"])  # earlier steps untouched
    assert not torch.equal(pcache["steps.2.hook_input"], cache["steps.2.hook_input"])  # the next step sees it


def test_continuous_and_end_to_end_variants_run_and_train():
    rng = np.random.default_rng(0)
    for kw in [dict(latent="continuous"), dict(latent="continuous", supervision="final", fixed_steps=3),
               dict(latent="continuous", supervision="final", fixed_steps=1, n_layers=3)]:
        model = small(**kw).train()
        cfg = model.cfg
        batch = rollout_batch(cfg, TASK, 4, rng, 6)
        loss, _ = model.loss(batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in model.blocks.parameters())
    model = small(latent="continuous", supervision="final", fixed_steps=3)
    assert model(tokens(ga.sample(TASK, 2, 1), model.cfg)).steps == 3


def test_transition_batch_targets_follow_the_exact_rule():
    cfg = small().cfg
    batch = transition_batch(cfg, TASK, 16, np.random.default_rng(1), 10)
    x, y = batch["inputs"], batch["targets"]
    assert torch.equal(x[..., :3], y[..., :3])  # only values change between steps
    filled_in = x[..., 3] < 23
    assert (y[..., 3][filled_in & (batch["weight"] == 1)] < 23).all() or cfg.error_prob > 0


def test_fixed_point_mode_stops_when_codes_repeat(problems):
    model = small()
    x = tokens(problems, model.cfg)
    out = model(x)  # steps=None: until the codes stop changing
    assert out.steps <= model.cfg.max_steps
    if out.steps < model.cfg.max_steps:
        assert torch.equal(out.codes[:, -1], out.codes[:, -2])


def test_bad_inputs_are_rejected_clearly(problems):
    model = small()
    x = tokens(problems, model.cfg)
    with pytest.raises(ValueError, match=r"\[batch, pos, 4\]"):
        model(x[..., :3])
    with pytest.raises(ValueError, match="factor 'value' has codes in .*allowed 0..24"):
        bad = x.clone()
        bad[0, 0, 3] = 99
        model(bad)
    with pytest.raises(ValueError, match="steps=13 is out of range"):
        model(x, steps=13)
    with pytest.raises(UnknownHookError, match="closest valid names"):
        model.run_with_hooks(x, steps=2, fwd_hooks=[("steps.0.blocks.0.hook_resid", lambda a, hook: a)])
    with pytest.raises(ValueError, match="latent"):
        ReasonerConfig(latent="fuzzy")
    with pytest.raises(ValueError, match="fixed_steps"):
        ReasonerConfig(supervision="final")


def test_longer_inputs_than_training_only_reuse_clipped_distances():
    model = small(rel_window=8)
    long = ga.sample(ga.GraphArithConfig(n_nodes=40, max_depth=6), 1, 0)
    x = tokens(long, model.cfg)
    assert x.shape[1] > 8 * 10
    out = model(x, steps=2)
    assert torch.isfinite(out.value_logits).all()


def test_encode_batch_pads_with_pad_tokens(problems):
    arr = encode_batch(problems + ga.sample(ga.GraphArithConfig(n_nodes=6), 1, 0), small().cfg)
    short = arr["factors"][-1]
    assert (short[-1] == [ga.PAD, 128, ga.op_na(), 23]).all()


@pytest.mark.parametrize("segment_window", [0, 2])
def test_plain_and_hooked_runs_agree_bit_for_bit(problems, segment_window):
    model = small(segment_window=segment_window)
    x = tokens(problems, model.cfg)
    plain = model(x, steps=4)
    assert not model.layout(x).fused
    cached, cache = model.run_with_cache(x, steps=4)
    noop = model.run_with_hooks(x, steps=4, fwd_hooks=[("steps.1.blocks.0.hook_resid_pre", lambda a, hook: a)])
    for other in (cached, noop):
        assert torch.equal(plain.value_logits, other.value_logits)
        assert torch.equal(plain.codes, other.codes)
    pattern = cache["steps.2.blocks.0.attn.hook_pattern"]  # a distribution over allowed keys
    assert torch.allclose(pattern.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("segment_window", [0, 2])
def test_the_fused_kernel_is_opt_in_and_close(problems, segment_window):
    model = small(segment_window=segment_window)
    x = tokens(problems, model.cfg)
    plain = model(x, steps=4)
    with model.fused_attention():
        assert model.layout(x).fused
        fused = model(x, steps=4)
        _, cache = model.run_with_cache(x, steps=4, names_filter=lambda n: n.endswith("hook_pattern"))
    assert torch.allclose(plain.value_logits, fused.value_logits, atol=1e-4)
    assert "steps.2.blocks.0.attn.hook_pattern" in cache


def test_a_problem_over_another_modulus_is_refused_by_name():
    model = small()
    other = ga.parse("4 = x_7; x_7 = x_1", modulus=5)
    with pytest.raises(ValueError, match=r"Z_5 but the model computes in Z_23"):
        tokens([other], model.cfg)


def _hand_pattern(model: Reasoner, cache, t: int, layer: int, L: int) -> torch.Tensor:
    """softmax(max(1, log(i + 1) / log(length_ref)) * (q.k / sqrt(d) + relative bias)) over keys j <= i."""
    q = cache[f"steps.{t}.blocks.{layer}.attn.hook_q"]  # [batch, pos, head, d_head]
    k = cache[f"steps.{t}.blocks.{layer}.attn.hook_k"]
    w, ref = model.cfg.rel_window, model.cfg.length_ref
    rel_bias = model.blocks[layer].attn.rel_bias.detach()  # [head, 2w + 1]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    pos = torch.arange(L)
    scores = scores + rel_bias[:, (pos[None, :] - pos[:, None]).clamp(-w, w) + w]
    gain = [max(1.0, math.log(i + 1) / math.log(ref)) if ref else 1.0 for i in range(L)]
    scores = scores * torch.tensor(gain)[None, None, :, None]
    return scores.masked_fill(pos[None, :] > pos[:, None], float("-inf")).softmax(-1)


def test_length_ref_sharpens_attention_only_beyond_the_reference_length():
    problem = ga.sample(ga.GraphArithConfig(n_nodes=14, max_depth=4), 1, 3)
    base = small(causal=True, rel_window=8)
    x = tokens(problem, base.cfg)
    L = x.shape[1]
    longer = small(causal=True, rel_window=8, length_ref=L)  # every query sees <= length_ref keys
    assert torch.equal(base(x, steps=3).value_logits, longer(x, steps=3).value_logits)
    scaled = small(causal=True, rel_window=8, length_ref=L // 3)
    _, cache = scaled.run_with_cache(x, steps=3)
    for t, layer in ((0, 0), (2, 1)):
        pattern = cache[f"steps.{t}.blocks.{layer}.attn.hook_pattern"]
        assert torch.allclose(pattern, _hand_pattern(scaled, cache, t, layer, L), atol=1e-5)
    _, plain_cache = base.run_with_cache(x, steps=1)  # same weights, no scaling: differs past L // 3
    changed = ~torch.isclose(cache["steps.0.blocks.0.attn.hook_pattern"],
                             plain_cache["steps.0.blocks.0.attn.hook_pattern"], atol=1e-6).all(-1).all(1)[0]
    assert not changed[: L // 3].any() and changed[L // 3 + 1:].all()
    other = tokens(ga.sample(ga.GraphArithConfig(n_nodes=14, max_depth=4), 1, 4), scaled.cfg)
    if other.shape[1] == L:  # copies share one layout: rows [x, x, other] give each row's own run
        batch = scaled(torch.cat([x, x, other]), steps=3).value_logits
        assert torch.allclose(batch[1], scaled(x, steps=3).value_logits[0], atol=1e-5)
    plain = scaled(x, steps=3).value_logits
    with scaled.fused_attention():  # the fused kernel applies the same gain
        assert torch.allclose(scaled(x, steps=3).value_logits, plain, atol=1e-4)


def test_length_ref_is_validated():
    with pytest.raises(ValueError, match="length_ref"):
        ReasonerConfig(length_ref=1)
    with pytest.raises(ValueError, match="length_ref"):
        ReasonerConfig(length_ref=-5)
