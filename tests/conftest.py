"""Shared fixtures: a tiny random Llama model + byte-level BPE tokenizer, built offline in well under a second."""

from __future__ import annotations

import os

import pytest

# Nothing in the test suite may reach the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _selfinstruct_logger_reset():
    """The CLI gives the "selfinstruct" logger its own handler and turns propagation off. A test (or a
    session fixture) that runs the CLI in process must not hide later tests' records from caplog, so every
    test starts and ends with the logger as the library leaves it: no handler, propagating, level unset."""
    import logging

    def reset():
        log = logging.getLogger("selfinstruct")
        log.handlers[:] = []
        log.setLevel(logging.NOTSET)
        log.propagate = True

    reset()
    yield
    reset()


TINY_CORPUS = [
    "Give three tips for staying healthy.",
    "Classify the sentiment of this review as positive or negative.",
    "Write a short poem about the sea.",
    "Instruction: translate the sentence into French.\nInput: Where is the station?\nOutput: Où est la gare ?",
    "Come up with a series of tasks:\n1. List five colors.\n2. Name a fruit.\n3. Explain gravity.",
    "The quick brown fox jumps over the lazy dog. ### Task 7: summarize the text.",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
# One user turn in, the assistant's turn opened: the same shape as SmolLM2's ChatML template.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_CONFIG = dict(  # a Llama with every dimension as small as it goes while still doing real attention;
    # a context long enough for an alpaca prompt (~1,200 of its tokens), which `transformers serve` enforces
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
)


def build_tiny_tokenizer():
    """A byte-level BPE (any text round-trips) trained on a few sentences; eos = pad = <|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(TINY_CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(vocab_size: int, seed: int = 0):
    """A randomly initialised 2-layer Llama; the seed makes the weights (and so every test) repeatable."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=2, **TINY_CONFIG)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger random logits than the default init, so sampling visibly differs by seed
        model.lm_head.weight.mul_(20)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A local model directory (config.json, safetensors, tokenizer, chat template) for a tiny Llama."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tiny_tokenizer()
    build_tiny_model(len(tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_tiny_gguf(path, seed: int = 0) -> None:
    """Write a tiny llama GGUF (f32 tensors, byte-level BPE vocab with merges, chat template)."""
    import json

    import gguf
    import numpy as np

    tok = build_tiny_tokenizer()
    vocab = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    c = TINY_CONFIG
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    rng = np.random.default_rng(seed)

    def w(*shape):  # torch layout (out, in); the writer stores it the GGUF way round
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t in tokens])  # 3 = control, 1 = normal
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|im_end|>"])
    writer.add_chat_template(CHAT_TEMPLATE)
    hidden, ffn, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * head_dim
    writer.add_tensor("token_embd.weight", w(len(tokens), hidden))
    for i in range(c["num_hidden_layers"]):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", w(hidden, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", w(kv, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", w(kv, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(hidden, hidden))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(hidden, ffn))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="session")
def tiny_gguf_file(tmp_path_factory):
    """Path of a tiny llama .gguf file that transformers can load and convert."""
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf"
    write_tiny_gguf(path)
    return path
