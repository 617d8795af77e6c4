"""HFEngine against a tiny random Llama: batching, padding and stopping must not change what is generated."""

from __future__ import annotations

import pytest
import torch

from memtrain.engines import Engine, Generation, Sampling
from memtrain.engines.hf import HFEngine

VOCAB = 200
PAD = 0


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # A larger initializer_range than the default 0.02 gives peaked next-token distributions, so that
    # greedy choices are not near-ties that float noise from padding could flip.
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.2, pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def engine(model, seed: int = 0, max_batch_size: int = 64) -> HFEngine:
    return HFEngine(model, pad_token_id=PAD, generator=torch.Generator().manual_seed(seed),
                    max_batch_size=max_batch_size)


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
        lambda module, args, kwargs: seen.append(kwargs["position_ids"].tolist()), with_kwargs=True)
    try:
        engine(model).generate(prompts([2, 5]), Sampling(max_new_tokens=3, temperature=0))
    finally:
        hook.remove()
    assert seen == [[[0, 0, 0, 0, 1], [0, 1, 2, 3, 4]], [[2], [5]], [[3], [6]]]


@pytest.mark.parametrize("sampling", [GREEDY, Sampling(max_new_tokens=12, temperature=0.7, top_p=0.9)],
                         ids=["greedy", "t0.7-p0.9"])
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
            return generation.token_ids[:position + 1], True
    return generation.token_ids, False


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_stop_tokens_end_only_their_sequence(model, temperature):
    batch = prompts([8, 3, 15, 6])
    free = Sampling(max_new_tokens=20, temperature=temperature)
    unstopped = engine(model, seed=9).generate(batch, free)
    # A stop token that the first sequence emits a few tokens in and that some other sequence never emits.
    others = [set(g.token_ids) for g in unstopped[1:]]
    stop = next(token for token in unstopped[0].token_ids[2:] if any(token not in seen for seen in others))
    stopped = engine(model, seed=9).generate(batch, Sampling(max_new_tokens=20, temperature=temperature,
                                                             stop_token_ids=(stop,)))
    for before, after in zip(unstopped, stopped):
        tokens, ended = truncated_at_stop(before, {stop})
        assert after.token_ids == tokens and after.stopped == ended
        assert len(after.logprobs) == len(after.token_ids)
        torch.testing.assert_close(torch.tensor(after.logprobs), torch.tensor(before.logprobs[:len(tokens)]),
                                   atol=1e-4, rtol=1e-4)
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


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"max_new_tokens": 4, "temperature": -0.1}, "temperature"),
    ({"max_new_tokens": 4, "temperature": float("nan")}, "temperature"),
    ({"max_new_tokens": 4, "top_p": 0.0}, "top_p"),
    ({"max_new_tokens": 4, "top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 4, "stop_token_ids": (-1,)}, "stop_token_ids"),
])
def test_sampling_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)


def test_sampling_is_hashable_with_list_stops():
    assert Sampling(max_new_tokens=1, stop_token_ids=[2, 3]) == Sampling(max_new_tokens=1, stop_token_ids=(2, 3))
    hash(Sampling(max_new_tokens=1, stop_token_ids=[2, 3]))
