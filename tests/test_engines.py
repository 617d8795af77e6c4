"""HFEngine against a tiny random Llama: batching, padding and stopping must not change what is generated."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_llama import tiny_llama

from memtrain.engines import Engine, Generation, Sampling, attention, linear_kernels
from memtrain.engines.hf import HFEngine
from memtrain.engines.sampling import choose

VOCAB = 200
PAD = 0


@pytest.fixture(scope="module")
def model():
    return tiny_llama(VOCAB, max_position_embeddings=256, pad_token_id=PAD)


def engine(model, seed: int = 0, max_batch_size: int = 64) -> HFEngine:
    return HFEngine(
        model, pad_token_id=PAD, generator=torch.Generator().manual_seed(seed), max_batch_size=max_batch_size
    )


def prompts(lengths, seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (length,), generator=generator).tolist() for length in lengths]


GREEDY = Sampling(max_new_tokens=12, temperature=0.0)


def assert_same(left: list[Generation], right: list[Generation]) -> None:
    assert [g.token_ids for g in left] == [g.token_ids for g in right]
    assert [g.stopped for g in left] == [g.stopped for g in right]
    for a, b in zip(left, right):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)


def teacher_forced_logprobs(model, prompt: list[int], generated: tuple[int, ...], temperature: float) -> list[float]:
    """Log-probs of the generated tokens from one plain forward pass over prompt + generated, no cache, no padding."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + list(generated)])).logits[0].float()
    scores = (logits if temperature == 0 else logits / temperature).log_softmax(-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(generated))
    return scores[positions, torch.tensor(generated)].tolist()


def test_engine_satisfies_protocol(model):
    assert isinstance(engine(model), Engine)


def test_batched_left_padding_equals_each_prompt_alone(model):
    batch = prompts([3, 17, 9, 1, 30])
    together = engine(model).generate(batch, GREEDY)
    alone = [engine(model).generate([prompt], GREEDY)[0] for prompt in batch]
    assert_same(together, alone)
    assert all(len(g.token_ids) == GREEDY.max_new_tokens and not g.stopped for g in together)
    # Not a degenerate model that emits one token regardless of its input.
    assert len({g.token_ids for g in together}) > 1


def test_positions_skip_left_padding(model):
    """Each prompt's first real token sits at position 0. Llama's rotary embeddings are blind to a constant
    shift, so the equality test above cannot catch pads counted as positions; absolute-position models would."""
    seen: list[list[list[int]]] = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["position_ids"].tolist()), with_kwargs=True
    )
    try:
        engine(model).generate(prompts([2, 5]), Sampling(max_new_tokens=3, temperature=0))
    finally:
        hook.remove()
    assert seen == [[[0, 0, 0, 0, 1], [0, 1, 2, 3, 4]], [[2], [5]], [[3], [6]]]


@pytest.mark.parametrize(
    "sampling", [GREEDY, Sampling(max_new_tokens=12, temperature=0.7, top_p=0.9)], ids=["greedy", "t0.7-p0.9"]
)
def test_logprobs_match_teacher_forcing(model, sampling):
    batch = prompts([5, 14, 22])
    for prompt, generation in zip(batch, engine(model).generate(batch, sampling)):
        expected = teacher_forced_logprobs(model, prompt, generation.token_ids, sampling.temperature)
        torch.testing.assert_close(torch.tensor(generation.logprobs), torch.tensor(expected), atol=1e-4, rtol=1e-4)


def test_generator_seed_determines_samples(model):
    batch = prompts([4, 11, 7])
    sampling = Sampling(max_new_tokens=16, temperature=1.0)
    first = engine(model, seed=123).generate(batch, sampling)
    assert_same(first, engine(model, seed=123).generate(batch, sampling))
    assert [g.token_ids for g in first] != [g.token_ids for g in engine(model, seed=456).generate(batch, sampling)]


def test_generator_state_carries_over_between_calls(model):
    """Draws continue from the caller's generator: restoring its state replays a call exactly."""
    sampling = Sampling(max_new_tokens=8, temperature=1.0)
    sampler = engine(model, seed=5)
    state = sampler.generator.get_state()
    first = sampler.generate(prompts([6]), sampling)
    second = sampler.generate(prompts([6]), sampling)
    sampler.generator.set_state(state)
    assert_same(first, sampler.generate(prompts([6]), sampling))
    assert first[0].token_ids != second[0].token_ids


def truncated_at_stop(generation: Generation, stop: set[int]) -> tuple[tuple[int, ...], bool]:
    for position, token in enumerate(generation.token_ids):
        if token in stop:
            return generation.token_ids[: position + 1], True
    return generation.token_ids, False


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_stop_tokens_end_only_their_sequence(model, temperature):
    batch = prompts([8, 3, 15, 6])
    free = Sampling(max_new_tokens=20, temperature=temperature)
    unstopped = engine(model, seed=9).generate(batch, free)
    # A stop token that the first sequence emits a few tokens in and that some other sequence never emits.
    others = [set(g.token_ids) for g in unstopped[1:]]
    stop = next(token for token in unstopped[0].token_ids[2:] if any(token not in seen for seen in others))
    stopped = engine(model, seed=9).generate(
        batch, Sampling(max_new_tokens=20, temperature=temperature, stop_token_ids=(stop,))
    )
    for before, after in zip(unstopped, stopped):
        tokens, ended = truncated_at_stop(before, {stop})
        assert after.token_ids == tokens and after.stopped == ended
        assert len(after.logprobs) == len(after.token_ids)
        torch.testing.assert_close(
            torch.tensor(after.logprobs), torch.tensor(before.logprobs[: len(tokens)]), atol=1e-4, rtol=1e-4
        )
    assert stopped[0].stopped and stopped[0].token_ids[-1] == stop and len(stopped[0].token_ids) < 20
    assert any(not g.stopped and len(g.token_ids) == 20 for g in stopped[1:])


def test_stop_at_first_token_and_all_finished(model):
    """Every sequence stopping at once ends the call: one token each, stop included."""
    batch = prompts([4, 9])
    first_tokens = {g.token_ids[0] for g in engine(model).generate(batch, Sampling(max_new_tokens=1, temperature=0))}
    out = engine(model).generate(batch, Sampling(max_new_tokens=50, temperature=0, stop_token_ids=tuple(first_tokens)))
    assert all(len(g.token_ids) == 1 and g.stopped for g in out)


def test_max_new_tokens_respected(model):
    for generation in engine(model).generate(prompts([2, 5]), Sampling(max_new_tokens=3, temperature=1.0)):
        assert len(generation.token_ids) == len(generation.logprobs) == 3 and not generation.stopped


def test_tiny_top_p_is_greedy(model):
    batch = prompts([6, 13, 2])
    nucleus = engine(model, seed=77).generate(batch, Sampling(max_new_tokens=12, temperature=1.0, top_p=1e-6))
    # At temperature 1 the sampling distribution is the greedy one, so the log-probs agree as well.
    assert_same(nucleus, engine(model).generate(batch, GREEDY))


def test_results_in_input_order_across_micro_batches(model):
    lengths = [12, 2, 25, 7, 1, 19, 4]  # unsorted, so internal sorting and splitting both reorder
    batch = prompts(lengths)
    split = engine(model, max_batch_size=2).generate(batch, GREEDY)
    alone = [engine(model).generate([prompt], GREEDY)[0] for prompt in batch]
    assert_same(split, alone)


def test_training_flag_restored_and_eval_during_generation(model):
    seen: list[bool] = []
    hook = model.model.layers[0].register_forward_hook(lambda module, args, output: seen.append(module.training))
    try:
        model.train()
        model.model.layers[1].eval()  # a mixed state must come back as it was, not flattened
        engine(model).generate(prompts([3]), Sampling(max_new_tokens=2, temperature=0))
        assert seen and not any(seen)
        assert model.training and model.model.layers[0].training and not model.model.layers[1].training
        model.eval()
        engine(model).generate(prompts([3]), Sampling(max_new_tokens=2, temperature=0))
        assert not any(module.training for module in model.modules())
    finally:
        hook.remove()
        model.eval()


def test_training_flag_restored_after_error(model):
    model.train()
    try:
        with pytest.raises(ValueError, match="empty"):
            engine(model).generate([[1, 2], []], GREEDY)
        assert model.training
    finally:
        model.eval()


def test_no_prompts_no_generations(model):
    assert engine(model).generate([], GREEDY) == []


def test_generator_on_other_device_rejected(model):
    if not torch.cuda.is_available():
        pytest.skip("needs a second device type")
    with pytest.raises(ValueError, match="generator"):
        HFEngine(model, pad_token_id=PAD, generator=torch.Generator(device="cuda"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"max_new_tokens": 4, "temperature": -0.1}, "temperature"),
        ({"max_new_tokens": 4, "temperature": float("nan")}, "temperature"),
        ({"max_new_tokens": 4, "top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 4, "top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 4, "stop_token_ids": (-1,)}, "stop_token_ids"),
    ],
)
def test_sampling_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)


def test_sampling_is_hashable_with_list_stops():
    assert Sampling(max_new_tokens=1, stop_token_ids=[2, 3]) == Sampling(max_new_tokens=1, stop_token_ids=(2, 3))
    hash(Sampling(max_new_tokens=1, stop_token_ids=[2, 3]))


def reference_decode(model, prompt: list[int], sampling: Sampling, uniforms: torch.Tensor | None) -> Generation:
    """The engine's contract computed the slow way: a full forward over prompt + tokens so far at every step,
    no cache, no padding, no batch, and each token drawn with the same uniform the engine assigns it."""
    tokens: list[int] = []
    logprobs: list[float] = []
    with torch.no_grad():
        for step in range(sampling.max_new_tokens):
            logits = model(torch.tensor([prompt + tokens])).logits[:, -1]
            token, logprob = choose(logits, sampling, None if uniforms is None else uniforms[step : step + 1])
            tokens.append(int(token))
            logprobs.append(float(logprob))
            if tokens[-1] in sampling.stop_token_ids:
                return Generation(tuple(tokens), tuple(logprobs), True)
    return Generation(tuple(tokens), tuple(logprobs), False)


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(max_new_tokens=10, temperature=0.0),
        Sampling(max_new_tokens=10, temperature=1.0),
        Sampling(max_new_tokens=10, temperature=0.7, top_p=0.9),
    ],
    ids=["greedy", "sampled", "nucleus"],
)
@pytest.mark.parametrize("max_batch_size", [1, 2, 64])
def test_continuous_batching_equals_the_uncached_reference(model, sampling, max_batch_size):
    """Cache slots, their refills, left padding, compaction and the per-prompt uniforms change nothing:
    every prompt gets exactly the tokens of a cache-free, batch-free decode with its own uniforms."""
    batch = prompts([9, 3, 17, 5, 12])
    sampler = engine(model, seed=11, max_batch_size=max_batch_size)
    uniforms = (
        None
        if sampling.temperature == 0
        else torch.rand((len(batch), sampling.max_new_tokens), generator=torch.Generator().manual_seed(11))
    )
    # A stop token the reference emits mid-way for some prompts, so that slots free up at different steps.
    free = [
        reference_decode(model, prompt, sampling, None if uniforms is None else uniforms[row])
        for row, prompt in enumerate(batch)
    ]
    stop = free[0].token_ids[3]
    stopping = Sampling(
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        stop_token_ids=(stop,),
    )
    expected = [
        reference_decode(model, prompt, stopping, None if uniforms is None else uniforms[row])
        for row, prompt in enumerate(batch)
    ]
    assert {len(g.token_ids) for g in expected} != {sampling.max_new_tokens}
    assert_same(sampler.generate(batch, stopping), expected)


@pytest.mark.parametrize("max_batch_size", [2, 64])
def test_identical_prompts_share_one_prefill_and_sample_apart(model, max_batch_size):
    """A GRPO group's G copies of one prompt are prefilled once, yet each copy draws with its own uniforms:
    the tokens are those of a cache-free decode of every copy, and the copies differ from each other."""
    first, second = prompts([9, 6], seed=4)
    batch = [first, second, first, first, list(second), first]
    sampling = Sampling(max_new_tokens=8, temperature=1.0)
    uniforms = torch.rand((len(batch), sampling.max_new_tokens), generator=torch.Generator().manual_seed(5))
    prefilled: list[int] = []

    def count_prefill_rows(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prefilled.append(kwargs["input_ids"].shape[0])

    handle = model.register_forward_pre_hook(count_prefill_rows, with_kwargs=True)
    try:
        generated = engine(model, seed=5, max_batch_size=max_batch_size).generate(batch, sampling)
    finally:
        handle.remove()
    assert_same(generated, [reference_decode(model, p, sampling, uniforms[row]) for row, p in enumerate(batch)])
    # Sorted by length, then by tokens: the four copies of `first` sit together, two per group of two slots.
    assert prefilled == ([1, 1, 1] if max_batch_size == 2 else [2])
    assert len({generated[row].token_ids for row in (0, 2, 3, 5)}) > 1


def test_samples_do_not_depend_on_the_batch_size(model):
    batch = prompts([7, 2, 11, 4, 9, 6, 13])
    sampling = Sampling(max_new_tokens=9, temperature=1.0, stop_token_ids=(5, 17, 33))
    runs = [engine(model, seed=3, max_batch_size=size).generate(batch, sampling) for size in (1, 3, 7)]
    assert_same(runs[0], runs[1])
    assert_same(runs[0], runs[2])


def test_a_call_advances_the_generator_by_prompts_times_budget(model):
    """However the sequences stop, so that the next call's draws never depend on this call's outcomes."""
    sampler = engine(model, seed=8)
    sampler.generate(prompts([4, 6]), Sampling(max_new_tokens=5, temperature=1.0, stop_token_ids=(1, 2, 3)))
    expected = torch.Generator().manual_seed(8)
    torch.rand((2, 5), generator=expected)
    assert torch.equal(sampler.generator.get_state(), expected.get_state())
    state = sampler.generator.get_state()
    sampler.generate(prompts([4, 6]), GREEDY)
    assert torch.equal(sampler.generator.get_state(), state)  # greedy draws nothing


PROBS = torch.tensor([[0.1, 0.2, 0.7]])


@pytest.mark.parametrize("uniform, token", [(0.0, 0), (0.05, 0), (0.1, 1), (0.29, 1), (0.3, 2), (0.999999, 2)])
def test_inverse_cdf_by_hand(uniform, token):
    """Cumulative [0.1, 0.3, 1.0]: a uniform u picks the first token whose cumulative weight exceeds u."""
    chosen, logprob = choose(PROBS.log(), Sampling(max_new_tokens=1), torch.tensor([uniform]))
    assert int(chosen) == token
    assert float(logprob) == pytest.approx(float(PROBS[0, token].log()), abs=1e-6)


def test_top_p_by_hand():
    """top_p 0.7 keeps only the 0.7 token (the mass above the 0.2 token already reaches 0.7), top_p 0.75 adds
    the 0.2 token; the log-prob stays the untruncated one."""
    for uniform in (0.0, 0.5, 0.99):
        chosen, logprob = choose(PROBS.log(), Sampling(max_new_tokens=1, top_p=0.7), torch.tensor([uniform]))
        assert int(chosen) == 2 and float(logprob) == pytest.approx(float(torch.tensor(0.7).log()), abs=1e-6)
    # Renormalised over {0.7, 0.2}: ranked cumulative [0.7, 0.9] of 0.9, so u = 0.8 lands on the 0.2 token.
    chosen, _ = choose(PROBS.log(), Sampling(max_new_tokens=1, top_p=0.75), torch.tensor([0.8]))
    assert int(chosen) == 1


def test_temperature_by_hand():
    """logits log [0.1, 0.2, 0.7] at temperature 0.5 give probabilities proportional to [0.01, 0.04, 0.49]."""
    scaled = torch.tensor([0.01, 0.04, 0.49]) / 0.54
    chosen, logprob = choose(PROBS.log(), Sampling(max_new_tokens=1, temperature=0.5), torch.tensor([0.05]))
    assert int(chosen) == 1 and float(logprob) == pytest.approx(float(scaled[1].log()), abs=1e-5)


def test_zero_probability_tokens_are_never_chosen():
    logits = torch.tensor([[-torch.inf, 0.0, -torch.inf, 0.0, -torch.inf]])
    for uniform in (0.0, 0.5, 1.0 - 2**-24):
        chosen, _ = choose(logits, Sampling(max_new_tokens=1), torch.tensor([uniform]))
        assert int(chosen) in (1, 3)


def test_sampled_frequencies_follow_the_distribution():
    draws = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    chosen, _ = choose(PROBS.log().expand(len(draws), -1), Sampling(max_new_tokens=1), draws)
    frequencies = torch.bincount(chosen, minlength=3) / len(draws)
    torch.testing.assert_close(frequencies, PROBS[0], atol=0.01, rtol=0)


def test_onednn_linear_layers_decode_the_same_tokens(model):
    batch = prompts([9, 3, 17])
    blas = HFEngine(model, PAD, torch.Generator(), linear="blas").generate(batch, GREEDY)
    onednn = HFEngine(model, PAD, torch.Generator(), linear="onednn").generate(batch, GREEDY)
    assert_same(onednn, blas)


def test_onednn_decodes_bfloat16_as_torch(model):
    """In bfloat16, greedy and sampled, the same tokens and log-probs up to bfloat16 rounding (bit for bit at
    SmolLM2-135M's shapes, where torch's kernel is oneDNN's too; not at this tiny model's)."""
    if torch.bfloat16 not in linear_kernels.onednn_dtypes():
        pytest.skip("oneDNN has no bfloat16 linear on this CPU")
    half = copy.deepcopy(model).to(torch.bfloat16)
    batch, sampled = prompts([9, 3, 17]), Sampling(max_new_tokens=12, temperature=1.0)
    for sampling in (GREEDY, sampled):
        blas = HFEngine(half, PAD, torch.Generator().manual_seed(3), linear="blas").generate(batch, sampling)
        onednn = HFEngine(half, PAD, torch.Generator().manual_seed(3), linear="onednn").generate(batch, sampling)
        assert [g.token_ids for g in onednn] == [g.token_ids for g in blas]
        for ours, theirs in zip(onednn, blas):
            torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), atol=2e-2, rtol=1e-2)


def test_auto_linear_is_onednn_on_cpu_for_float32_and_bfloat16_where_the_cpu_has_it():
    cpu = torch.device("cpu")
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert linear_kernels.resolve("auto", cpu, torch.float32) == "onednn"
    assert linear_kernels.resolve("auto", cpu, torch.bfloat16) == ("onednn" if bf16 else "blas")
    assert linear_kernels.resolve("auto", cpu, torch.float16) == "blas"
    assert linear_kernels.resolve("auto", torch.device("cuda"), torch.float32) == "blas"
    assert linear_kernels.resolve("blas", cpu, torch.float32) == "blas"
    with pytest.raises(ValueError, match="unknown engine linear kernel 'mkl'"):
        linear_kernels.resolve("mkl", cpu, torch.float32)


def test_onednn_scope_swaps_linear_layers_and_leaves_autograd_and_other_dtypes_to_torch():
    """Inside the scope the model's parameters and state_dict are its own; a pass that needs gradients (the
    trainer's) and a float64 layer take torch's kernel; the layers are back after the scope, even on error."""
    layer = torch.nn.Linear(4, 5)
    model = torch.nn.Sequential(layer, torch.nn.ReLU())
    inputs = torch.randn(2, 3, 4)
    kernel = linear_kernels.OneDNNLinear()
    keys = list(model.state_dict())
    with kernel.scope(model):
        assert type(model[0]) is linear_kernels.PackedLinear and model[0].weight is layer.weight
        assert list(model.state_dict()) == keys and list(model.parameters()) == [layer.weight, layer.bias]
        out = model(inputs)
        out.sum().backward()
        with torch.no_grad():
            double = kernel.linear(inputs.double(), layer.weight.double(), None)
            assert not kernel.packed
            fast = model(inputs)
    assert model[0] is layer
    torch.testing.assert_close(fast, out.detach())
    assert layer.weight.grad is not None and double.dtype == torch.float64 and len(kernel.packed) == 1
    with pytest.raises(RuntimeError, match="mid-forward"), kernel.scope(model):
        raise RuntimeError("mid-forward")
    assert model[0] is layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_weights_are_reused_until_the_weight_changes_in_place(dtype):
    """An optimizer step or load_state_dict updates weights in place: the next call must see the new weight."""
    if dtype not in linear_kernels.onednn_dtypes():
        pytest.skip(f"oneDNN has no {dtype} linear on this CPU")
    layer = torch.nn.Linear(24, 40, dtype=dtype)
    model = torch.nn.Sequential(layer)
    inputs = torch.randn(3, 24, dtype=dtype)
    kernel = linear_kernels.OneDNNLinear(rows=8)
    with torch.inference_mode():
        with kernel.scope(model):
            first = model(inputs)
        packed = kernel.packed[id(layer.weight)][2]
        with kernel.scope(model):
            again = model(inputs)
        assert kernel.packed[id(layer.weight)][2] is packed  # one reorder for both calls
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0, "rtol": 0}
    torch.testing.assert_close(first, torch.nn.functional.linear(inputs, layer.weight, layer.bias), **tolerance)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    with torch.no_grad():
        layer.weight.mul_(-2)
    with torch.inference_mode(), kernel.scope(model):
        updated = model(inputs)
    torch.testing.assert_close(updated, torch.nn.functional.linear(inputs, layer.weight, layer.bias), **tolerance)
    del layer, model
    assert not kernel.packed  # an entry leaves with its weight


def test_an_engine_decodes_with_the_policy_after_an_update(model):
    """The engine keeps packed weights across calls; after an optimizer step it must decode as a fresh engine."""
    policy = copy.deepcopy(model)
    batch = prompts([9, 3, 17])
    kept = HFEngine(policy, PAD, torch.Generator(), linear="onednn")
    before = kept.generate(batch, GREEDY)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    logits = policy(torch.tensor([batch[0]])).logits
    logits.logsumexp(-1).sum().backward()
    optimizer.step()
    after = kept.generate(batch, GREEDY)
    assert_same(after, HFEngine(policy, PAD, torch.Generator(), linear="onednn").generate(batch, GREEDY))
    assert_same(after, HFEngine(policy, PAD, torch.Generator(), linear="blas").generate(batch, GREEDY))
    assert [g.token_ids for g in after] != [g.token_ids for g in before]


@pytest.mark.parametrize("mask_kind", ["boolean", "additive", "none"])
def test_one_row_attention_equals_sdpa_over_repeated_key_value_heads(mask_kind):
    """The grouped one-row path against transformers' sdpa, which copies each kv head to its query heads."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    generator = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    query = torch.randn(2, 6, 1, 8, generator=generator)
    key, value = torch.randn(2, 2, 5, 8, generator=generator), torch.randn(2, 2, 5, 8, generator=generator)
    allowed = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    mask = {
        "boolean": allowed,
        "additive": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min),
        "none": None,
    }[mask_kind]
    ours, _ = attention.sdpa_with_one_row_decode(module, query, key, value, mask, scaling=0.3)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    assert ours.shape == theirs.shape == (2, 1, 6, 8)
    torch.testing.assert_close(ours, theirs)
    # By hand for one head: query head 4 reads kv head 4 // 3 = 1; row 0 attends to keys 0-2 only.
    if mask_kind == "boolean":
        weights = torch.softmax(0.3 * key[0, 1, :3] @ query[0, 4, 0], dim=-1)
        torch.testing.assert_close(ours[0, 0, 4], weights @ value[0, 1, :3])


def test_multi_row_queries_run_transformers_sdpa_unchanged():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    generator = torch.Generator().manual_seed(1)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    query, key, value = (torch.randn(1, shape, 4, 8, generator=generator) for shape in (4, 2, 2))
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool).tril()
    ours, _ = attention.sdpa_with_one_row_decode(module, query, key, value, mask)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask)
    assert torch.equal(ours, theirs)


def test_the_one_row_attention_is_switched_on_for_generate_only(model):
    """Inside generate a CPU sdpa model decodes with the one-row attention; before, after and after an
    error inside the call it is on sdpa again, so the trainer's passes never run it."""
    assert model.config._attn_implementation == "sdpa"
    seen: list[str] = []
    hook = model.model.layers[0].register_forward_hook(
        lambda module, args, output: seen.append(model.config._attn_implementation)
    )
    try:
        engine(model).generate(prompts([3, 5]), Sampling(max_new_tokens=3, temperature=0))
        assert seen and set(seen) == {attention.NAME}
        assert model.config._attn_implementation == model.model.layers[0].self_attn.config._attn_implementation
        assert model.config._attn_implementation == "sdpa"
    finally:
        hook.remove()

    def fail(module, args, output):
        raise RuntimeError("forward failed")

    hook = model.model.layers[0].register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="forward failed"):
            engine(model).generate(prompts([3]), GREEDY)
        assert model.config._attn_implementation == "sdpa"
    finally:
        hook.remove()


def test_other_attention_implementations_decode_as_they_are(model):
    seen: list[str] = []
    hook = model.model.layers[0].register_forward_hook(
        lambda module, args, output: seen.append(model.config._attn_implementation)
    )
    model.set_attn_implementation("eager")
    try:
        eager = engine(model).generate(prompts([9, 3, 17]), GREEDY)
        assert set(seen) == {"eager"} and model.config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")
        hook.remove()
    assert_same(engine(model).generate(prompts([9, 3, 17]), GREEDY), eager)
